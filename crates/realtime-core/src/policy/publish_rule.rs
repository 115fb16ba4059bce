//! The client-publish shorthand (`REALTIME_CLIENT_PUBLISH`): topic patterns that
//! accept client publishes from anyone who may subscribe to the topic.

/// A topic pattern opened to client publishing: `chat:lobby` (exact) or
/// `chat:*` (every topic starting with `chat:`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublishRule {
    pattern: String,
}

impl PublishRule {
    pub fn new(pattern: impl Into<String>) -> Self {
        PublishRule {
            pattern: pattern.into(),
        }
    }

    pub fn pattern(&self) -> &str {
        &self.pattern
    }

    pub fn matches(&self, topic: &str) -> bool {
        match self.pattern.strip_suffix('*') {
            Some(prefix) => topic.starts_with(prefix),
            None => topic == self.pattern,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_or_prefix() {
        assert!(PublishRule::new("news").matches("news"));
        assert!(!PublishRule::new("news").matches("newsroom"));
        assert!(PublishRule::new("chat:*").matches("chat:lobby"));
        assert!(!PublishRule::new("chat:*").matches("chat"));
    }
}
