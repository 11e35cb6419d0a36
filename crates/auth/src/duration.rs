//! Human durations in config ("5m", "1h 30m", "600s"), also accepted as plain integer seconds.

use serde::{de, Deserialize, Deserializer, Serializer};
use std::time::Duration;

/// Parses "5m", "90s", "1h", or a bare number of seconds.
pub fn parse(s: &str) -> Result<Duration, String> {
    let t = s.trim();
    if let Ok(secs) = t.parse::<u64>() {
        return Ok(Duration::from_secs(secs));
    }
    humantime::parse_duration(t).map_err(|e| format!("invalid duration {t:?}: {e}"))
}

/// Formats a duration the way config accepts it back.
pub fn format(d: Duration) -> String {
    humantime::format_duration(d).to_string()
}

/// Serde adapter: `#[serde(with = "switchboard_auth::duration")]`.
pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        Secs(u64),
        Text(String),
    }
    match Raw::deserialize(d)? {
        Raw::Secs(s) => Ok(Duration::from_secs(s)),
        Raw::Text(t) => parse(&t).map_err(de::Error::custom),
    }
}

/// Serde adapter (serialize half).
pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&format(*d))
}

/// Serde adapter for an optional duration (absent = `None`):
/// `#[serde(default, with = "switchboard_auth::duration::option")]`.
pub mod option {
    use serde::{Deserializer, Serializer};
    use std::time::Duration;

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        super::deserialize(d).map(Some)
    }

    pub fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => super::serialize(d, s),
            None => s.serialize_none(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_common_forms() {
        assert_eq!(parse("5m").unwrap(), Duration::from_secs(300));
        assert_eq!(parse("1h").unwrap(), Duration::from_secs(3600));
        assert_eq!(parse("42").unwrap(), Duration::from_secs(42));
        assert!(parse("five minutes").is_err());
    }
}
