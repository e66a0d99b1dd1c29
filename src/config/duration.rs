//! Durations in the config, written as `30s`, `1m`, `1h30m` (serde `with` module).

use std::time::Duration;

use serde::{Deserialize, Deserializer};

/// Parse a humantime duration string.
pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let s = String::deserialize(d)?;
    humantime::parse_duration(&s)
        .map_err(|e| serde::de::Error::custom(format!("bad duration {s:?}: {e}")))
}

/// An optional duration (`minAge: 1h`); absent is `None`.
pub mod option {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer};

    /// Parse a humantime duration string, if given.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        Option::<String>::deserialize(d)?
            .map(|s| {
                humantime::parse_duration(&s)
                    .map_err(|e| serde::de::Error::custom(format!("bad duration {s:?}: {e}")))
            })
            .transpose()
    }
}
