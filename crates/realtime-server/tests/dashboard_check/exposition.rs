//! The metric families of a `/metrics` scrape (OpenMetrics text): each `# TYPE`
//! line's family and type, the sample names that type exposes, and the label
//! names its samples carry.

use std::collections::{BTreeMap, BTreeSet};

/// One exported family.
#[derive(Debug, Clone, Default)]
pub struct Family {
    /// `counter`, `gauge`, `histogram`, … as on the `# TYPE` line.
    pub kind: String,
    /// Label names seen on its samples (`le` included for histogram buckets).
    pub labels: BTreeSet<String>,
}

/// Every family of one scrape, by family name.
#[derive(Debug, Default)]
pub struct Exposition {
    pub families: BTreeMap<String, Family>,
    /// Sample lines whose name belongs to no `# TYPE`d family.
    pub orphans: Vec<String>,
}

/// The suffixes OpenMetrics gives a family's samples: a counter `F` is sampled
/// as `F_total`, a histogram as `F_bucket`, `F_sum` and `F_count`, a gauge as `F`.
pub fn sample_suffixes(kind: &str) -> &'static [&'static str] {
    match kind {
        "counter" => &["_total"],
        "histogram" => &["_bucket", "_sum", "_count"],
        _ => &[""],
    }
}

impl Exposition {
    pub fn parse(text: &str) -> Exposition {
        let mut out = Exposition::default();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let mut words = rest.split_whitespace();
                let (Some(name), Some(kind)) = (words.next(), words.next()) else {
                    out.orphans.push(line.to_owned());
                    continue;
                };
                out.families.entry(name.to_owned()).or_default().kind = kind.to_owned();
            }
        }
        for line in text
            .lines()
            .filter(|l| !l.starts_with('#') && !l.is_empty())
        {
            let end = line.find(['{', ' ']).unwrap_or(line.len());
            let labels = match line[end..].strip_prefix('{') {
                Some(rest) => label_names(rest),
                None => Some(Vec::new()),
            };
            match (out.family_name_of(&line[..end]), labels) {
                (Some(family), Some(labels)) => {
                    let family = out.families.get_mut(&family).expect("family just found");
                    family.labels.extend(labels);
                }
                _ => out.orphans.push(line.to_owned()),
            }
        }
        out
    }

    /// The family a sample name belongs to, following [`sample_suffixes`].
    pub fn family_of(&self, sample: &str) -> Option<(&str, &Family)> {
        let name = self.family_name_of(sample)?;
        self.families
            .get_key_value(&name)
            .map(|(k, f)| (k.as_str(), f))
    }

    fn family_name_of(&self, sample: &str) -> Option<String> {
        self.families.iter().find_map(|(name, family)| {
            let suffix = sample.strip_prefix(name.as_str())?;
            sample_suffixes(&family.kind)
                .contains(&suffix)
                .then(|| name.clone())
        })
    }
}

/// The label names of `name="value",…}` (after the opening brace), values
/// unescaped as OpenMetrics writes them; `None` if the text is not well formed.
fn label_names(mut rest: &str) -> Option<Vec<String>> {
    let mut names = Vec::new();
    loop {
        if let Some(after) = rest.strip_prefix('}') {
            return after.starts_with(' ').then_some(names);
        }
        let (name, after) = rest.split_once("=\"")?;
        names.push(name.to_owned());
        let mut chars = after.char_indices();
        let close = loop {
            match chars.next()? {
                (_, '\\') => {
                    chars.next()?;
                }
                (i, '"') => break i,
                _ => {}
            }
        };
        rest = &after[close + 1..];
        rest = rest.strip_prefix(',').unwrap_or(rest);
    }
}
