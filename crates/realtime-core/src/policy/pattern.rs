//! Namespace patterns: parsing `user:{sub}`-style patterns and matching them against
//! topic names segment by segment.
//!
//! A pattern is `:`-separated segments; each is a literal (topic characters other
//! than `:`) or a whole-segment placeholder, `{sub}` or `{role}`. A pattern matches
//! a topic when the topic's first N segments match the pattern's N segments: a
//! literal matches itself, a placeholder matches any one segment (an empty one
//! included, so `user:` stays inside `user:{sub}`). Deeper topics belong to the
//! namespace too: `user:{sub}` matches `user:alice` and `user:alice:inbox`.

use std::fmt;
use std::sync::Arc;

/// A placeholder segment of a pattern.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Placeholder {
    /// `{sub}`: the segment names a user id.
    Sub,
    /// `{role}`: the segment names a role.
    Role,
}

/// One segment of a pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Segment {
    Literal(Box<str>),
    Placeholder(Placeholder),
}

/// Why a namespace pattern was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PatternError {
    #[error("pattern is empty")]
    Empty,
    #[error("segment {index} is empty (segments are separated by a single `:`)")]
    EmptySegment { index: usize },
    #[error(
        "`{segment}`: patterns have no wildcards, a namespace already covers every deeper topic (`chat` covers `chat:lobby`)"
    )]
    Wildcard { segment: String },
    #[error("unknown placeholder `{segment}`: use `{{sub}}` or `{{role}}`")]
    UnknownPlaceholder { segment: String },
    #[error("placeholder in `{segment}` must be a whole segment, like `user:{{sub}}`")]
    PartialPlaceholder { segment: String },
    #[error("segment `{segment}` has a character outside [A-Za-z0-9_-.@=+]")]
    BadCharacter { segment: String },
}

/// A validated namespace pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pattern {
    text: Arc<str>,
    segments: Vec<Segment>,
}

impl Pattern {
    /// Parses and validates a pattern such as `chat`, `user:{sub}` or
    /// `team:{role}:board`.
    pub fn parse(text: &str) -> Result<Pattern, PatternError> {
        if text.is_empty() {
            return Err(PatternError::Empty);
        }
        let segments = text
            .split(':')
            .enumerate()
            .map(|(index, segment)| parse_segment(index, segment))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Pattern {
            text: Arc::from(text),
            segments,
        })
    }

    /// The pattern as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The pattern as a shared string (for denial reasons).
    pub(crate) fn as_arc(&self) -> &Arc<str> {
        &self.text
    }

    pub fn segments(&self) -> &[Segment] {
        &self.segments
    }

    /// Whether any segment is a placeholder.
    pub fn has_placeholder(&self) -> bool {
        self.placeholders().next().is_some()
    }

    /// Whether `topic` lies in this pattern's namespace: its first N segments match
    /// the pattern's N segments.
    pub fn matches(&self, topic: &str) -> bool {
        let mut parts = topic.split(':');
        self.segments.iter().all(|segment| match parts.next() {
            None => false,
            Some(part) => match segment {
                Segment::Literal(literal) => **literal == *part,
                Segment::Placeholder(_) => true,
            },
        })
    }

    /// Each placeholder with the topic segment it stands for, in pattern order.
    /// Meaningful for a topic this pattern [matches](Pattern::matches).
    pub fn bindings<'a>(&'a self, topic: &'a str) -> impl Iterator<Item = (Placeholder, &'a str)> {
        self.segments
            .iter()
            .zip(topic.split(':'))
            .filter_map(|(segment, part)| match segment {
                Segment::Placeholder(p) => Some((*p, part)),
                Segment::Literal(_) => None,
            })
    }

    /// How specific the pattern is: more segments first, then more literal
    /// segments. The larger wins when several patterns match one topic.
    pub fn specificity(&self) -> (usize, usize) {
        let literals = self
            .segments
            .iter()
            .filter(|s| matches!(s, Segment::Literal(_)))
            .count();
        (self.segments.len(), literals)
    }

    /// Whether both patterns match exactly the same topics (same literals at the
    /// same places, placeholders at the same places, of whatever kind).
    pub fn same_topics_as(&self, other: &Pattern) -> bool {
        self.segments.len() == other.segments.len()
            && self
                .segments
                .iter()
                .zip(&other.segments)
                .all(|pair| match pair {
                    (Segment::Literal(a), Segment::Literal(b)) => a == b,
                    (Segment::Placeholder(_), Segment::Placeholder(_)) => true,
                    _ => false,
                })
    }

    fn placeholders(&self) -> impl Iterator<Item = Placeholder> + '_ {
        self.segments.iter().filter_map(|s| match s {
            Segment::Placeholder(p) => Some(*p),
            Segment::Literal(_) => None,
        })
    }
}

impl fmt::Display for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

fn parse_segment(index: usize, segment: &str) -> Result<Segment, PatternError> {
    let owned = || segment.to_owned();
    match segment {
        "" => Err(PatternError::EmptySegment { index }),
        "{sub}" => Ok(Segment::Placeholder(Placeholder::Sub)),
        "{role}" => Ok(Segment::Placeholder(Placeholder::Role)),
        s if s.starts_with('{') && s.ends_with('}') => {
            Err(PatternError::UnknownPlaceholder { segment: owned() })
        }
        s if s.contains(['{', '}']) => Err(PatternError::PartialPlaceholder { segment: owned() }),
        s if s.contains('*') => Err(PatternError::Wildcard { segment: owned() }),
        s if !s.bytes().all(is_literal_byte) => {
            Err(PatternError::BadCharacter { segment: owned() })
        }
        s => Ok(Segment::Literal(s.into())),
    }
}

/// The topic character set less `:` (the separator).
fn is_literal_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.' | b'@' | b'=' | b'+')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(text: &str) -> Pattern {
        Pattern::parse(text).unwrap()
    }

    #[test]
    fn parses_literals_and_placeholders() {
        let pattern = p("team:{role}:board:{sub}");
        assert_eq!(
            pattern.segments(),
            &[
                Segment::Literal("team".into()),
                Segment::Placeholder(Placeholder::Role),
                Segment::Literal("board".into()),
                Segment::Placeholder(Placeholder::Sub),
            ]
        );
        assert_eq!(pattern.to_string(), "team:{role}:board:{sub}");
        assert!(pattern.has_placeholder());
        assert!(!p("chat").has_placeholder());
        assert!(Pattern::parse("a_b-c.d@e=f+g").is_ok());
    }

    #[test]
    fn rejects_invalid_patterns() {
        use PatternError::*;
        let err = |text: &str| Pattern::parse(text).unwrap_err();
        assert_eq!(err(""), Empty);
        assert_eq!(err(":chat"), EmptySegment { index: 0 });
        assert_eq!(err("chat::x"), EmptySegment { index: 1 });
        assert_eq!(err("chat:"), EmptySegment { index: 1 });
        assert_eq!(
            err("chat:*"),
            Wildcard {
                segment: "*".into()
            }
        );
        assert_eq!(
            err("user:{id}"),
            UnknownPlaceholder {
                segment: "{id}".into()
            }
        );
        assert_eq!(
            err("user:{}"),
            UnknownPlaceholder {
                segment: "{}".into()
            }
        );
        assert_eq!(
            err("user-{sub}"),
            PartialPlaceholder {
                segment: "user-{sub}".into()
            }
        );
        assert_eq!(
            err("user:{sub"),
            PartialPlaceholder {
                segment: "{sub".into()
            }
        );
        for bad in ["a b", "a/b", "é", "a#b"] {
            assert!(matches!(err(bad), BadCharacter { .. }), "{bad:?}");
        }
    }

    #[test]
    fn matches_by_leading_segments() {
        let chat = p("chat");
        assert!(chat.matches("chat"));
        assert!(chat.matches("chat:lobby"));
        assert!(chat.matches("chat:lobby:x"));
        assert!(chat.matches("chat:"));
        assert!(!chat.matches("chatroom"));
        assert!(!chat.matches("cha"));
        assert!(!chat.matches("x:chat"));

        let lobby = p("chat:lobby");
        assert!(lobby.matches("chat:lobby"));
        assert!(lobby.matches("chat:lobby:1"));
        assert!(!lobby.matches("chat"));
        assert!(!lobby.matches("chat:lobby2"));
    }

    #[test]
    fn placeholders_match_exactly_one_segment() {
        let user = p("user:{sub}");
        assert!(user.matches("user:alice"));
        assert!(user.matches("user:alice:inbox"));
        assert!(user.matches("user:"), "an empty segment is still a segment");
        assert!(!user.matches("user"));
        assert_eq!(
            user.bindings("user:alice:inbox").collect::<Vec<_>>(),
            vec![(Placeholder::Sub, "alice")]
        );
        let team = p("team:{role}:{sub}");
        assert!(team.matches("team:ops:bob"));
        assert!(!team.matches("team:ops"));
        assert_eq!(
            team.bindings("team:ops:bob:x").collect::<Vec<_>>(),
            vec![(Placeholder::Role, "ops"), (Placeholder::Sub, "bob")]
        );
    }

    #[test]
    fn specificity_counts_segments_then_literals() {
        assert!(p("user:{sub}:inbox").specificity() > p("user:{sub}").specificity());
        assert!(p("user:admin").specificity() > p("user:{sub}").specificity());
        assert!(p("user:{sub}").specificity() > p("user").specificity());
        assert!(p("{role}:x:{sub}").specificity() > p("a:b").specificity());
    }

    #[test]
    fn same_topics_ignores_placeholder_kind() {
        assert!(p("x:{sub}").same_topics_as(&p("x:{role}")));
        assert!(p("a:b").same_topics_as(&p("a:b")));
        assert!(!p("a:b").same_topics_as(&p("a:{sub}")));
        assert!(!p("a").same_topics_as(&p("a:b")));
    }
}
