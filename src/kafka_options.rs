//! librdkafka properties passed through to every Kafka client votestream
//! makes (the ingress producer, the consumer and its dead-letter producer,
//! the end-offset reader, the recount's reader): how a deployment adds
//! SASL/SCRAM, TLS or any other client setting without a flag of its own.
//!
//! They come from `--kafka-option key=value` (`KAFKA_OPTIONS`,
//! comma-separated) and from `--kafka-options-file` (one `key=value` a line,
//! for a Kubernetes Secret), are checked once at start against librdkafka,
//! and are applied last, over votestream's own settings. Values may be
//! secrets (`sasl.password`): no message and no `Debug` output shows one.

use std::collections::BTreeMap;
use std::fmt;

use rdkafka::ClientConfig;
use rdkafka::error::KafkaError;
use rdkafka::types::RDKafkaConfRes;

/// Properties votestream sets itself, for its delivery guarantees or from a
/// flag of its own; an option naming one is refused.
const RESERVED: [(&str, &str); 7] = [
    ("bootstrap.servers", "--kafka-brokers"),
    ("group.id", "--consumer-group"),
    ("group.instance.id", "--group-instance-id"),
    (
        "enable.auto.commit",
        "offsets are committed only after both sinks wrote a batch",
    ),
    (
        "enable.auto.offset.store",
        "offsets are committed only after both sinks wrote a batch",
    ),
    ("enable.idempotence", "votes are produced idempotently"),
    ("acks", "a vote is acknowledged once every in-sync replica has it"),
];

/// One property, `key=value`.
#[derive(Clone, PartialEq, Eq)]
pub struct KafkaOption {
    key: String,
    value: String,
}

impl fmt::Debug for KafkaOption {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}=<not shown>", self.key)
    }
}

/// Where an option came from, for error messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source<'a> {
    Flag,
    File(&'a str, usize),
}

impl fmt::Display for Source<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::Flag => f.write_str("--kafka-option (KAFKA_OPTIONS)"),
            Source::File(path, line) => write!(f, "{path} line {line}"),
        }
    }
}

/// The pass-through properties, checked; empty by default.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KafkaOptions(Vec<KafkaOption>);

impl KafkaOptions {
    /// Checks `key=value` options from the flags, then the lines of the options file
    /// (`path`, `text`: blank lines and `#` comments skipped). An error names the
    /// option's key and where it came from, never its value.
    pub fn parse(flags: &[String], file: Option<(&str, &str)>) -> Result<KafkaOptions, String> {
        let mut entries: Vec<(Source, &str)> = flags.iter().map(|s| (Source::Flag, s.as_str())).collect();
        if let Some((path, text)) = file {
            for (n, line) in text.lines().enumerate() {
                let line = line.trim();
                if !line.is_empty() && !line.starts_with('#') {
                    entries.push((Source::File(path, n + 1), line));
                }
            }
        }
        let mut seen: BTreeMap<String, Source> = BTreeMap::new();
        let mut options = Vec::new();
        for (source, entry) in entries {
            let Some((key, value)) = entry.split_once('=') else {
                return Err(format!("{source}: an option is not key=value (its text is not shown)"));
            };
            let key = key.trim();
            if key.is_empty() {
                return Err(format!("{source}: an option has no key"));
            }
            if let Some((_, why)) = RESERVED.iter().find(|(k, _)| *k == key) {
                return Err(format!("{source}: {key} cannot be set as a Kafka option ({why})"));
            }
            if let Some(first) = seen.insert(key.to_owned(), source) {
                return Err(format!("{source}: {key} is given twice (also in {first})"));
            }
            let option = KafkaOption {
                key: key.to_owned(),
                value: value.to_owned(),
            };
            check_with_librdkafka(&option).map_err(|e| format!("{source}: {e}"))?;
            options.push(option);
        }
        Ok(KafkaOptions(options))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The value of `key`, if it is among the options.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.0.iter().find(|o| o.key == key).map(|o| o.value.as_str())
    }

    /// Whether the options make clients authenticate (SASL).
    pub fn authenticates(&self) -> bool {
        self.get("security.protocol")
            .is_some_and(|p| p.to_ascii_lowercase().starts_with("sasl"))
    }
}

/// Sets the pass-through options on a client's configuration, after
/// votestream's own settings, so that they win over them.
pub trait PassThrough {
    fn pass_through(&mut self, options: &KafkaOptions) -> &mut Self;
}

impl PassThrough for ClientConfig {
    fn pass_through(&mut self, options: &KafkaOptions) -> &mut Self {
        for option in &options.0 {
            self.set(&option.key, &option.value);
        }
        self
    }
}

/// Whether a property whose value must never be shown (librdkafka's own
/// messages about an invalid value quote it).
fn is_secret(key: &str) -> bool {
    ["password", "secret", "jaas", "token", "key.pem", "oauthbearer.config"]
        .iter()
        .any(|s| key.contains(s))
}

/// librdkafka's verdict on one property, as it would give it when a client is made.
fn check_with_librdkafka(option: &KafkaOption) -> Result<(), String> {
    let mut config = ClientConfig::new();
    config.set(&option.key, &option.value);
    match config.create_native_config() {
        Ok(_) => Ok(()),
        Err(KafkaError::ClientConfig(RDKafkaConfRes::RD_KAFKA_CONF_UNKNOWN, ..)) => {
            Err(format!("{} is no librdkafka property", option.key))
        }
        Err(KafkaError::ClientConfig(_, desc, ..)) if !is_secret(&option.key) => {
            Err(format!("librdkafka refuses {}: {desc}", option.key))
        }
        Err(_) => Err(format!(
            "librdkafka refuses the value of {} (not shown: it may be a secret)",
            option.key
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flags(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn options_from_the_flag_and_the_file_are_applied_in_that_order() {
        let file = "# SCRAM over TLS\nsecurity.protocol=SASL_SSL\n\n  sasl.password = p=a=s=s\n";
        let options = KafkaOptions::parse(
            &flags(&["sasl.mechanism=SCRAM-SHA-512", "sasl.username=votestream"]),
            Some(("/run/secrets/kafka", file)),
        )
        .unwrap();
        assert!(options.authenticates());
        // Only the first `=` splits: the value keeps its own.
        assert_eq!(options.get("sasl.password"), Some(" p=a=s=s"));
        let mut config = ClientConfig::new();
        config.set("linger.ms", "1").pass_through(&options);
        assert_eq!(config.get("sasl.username"), Some("votestream"));
        assert_eq!(config.get("security.protocol"), Some("SASL_SSL"));
        assert_eq!(config.get("linger.ms"), Some("1"));
    }

    #[test]
    fn an_option_wins_over_votestreams_own_setting() {
        let options = KafkaOptions::parse(&flags(&["linger.ms=20"]), None).unwrap();
        let mut config = ClientConfig::new();
        config.set("linger.ms", "1").pass_through(&options);
        assert_eq!(config.get("linger.ms"), Some("20"));
    }

    #[test]
    fn no_options_authenticate_nothing() {
        let options = KafkaOptions::parse(&[], None).unwrap();
        assert!(options.is_empty() && !options.authenticates());
    }

    #[test]
    fn bad_options_are_refused_by_key_and_place_without_their_values() {
        for (flag, file, expected) in [
            (
                vec!["sasl.password"],
                None,
                "--kafka-option (KAFKA_OPTIONS): an option is not key=value",
            ),
            (vec!["=x"], None, "an option has no key"),
            (
                vec!["enable.auto.commit=true"],
                None,
                "enable.auto.commit cannot be set",
            ),
            (vec!["bootstrap.servers=a:1"], None, "--kafka-brokers"),
            (
                vec!["sasl.pasword=hunter2"],
                None,
                "sasl.pasword is no librdkafka property",
            ),
            (
                vec!["security.protocol=carrier-pigeon"],
                None,
                "librdkafka refuses security.protocol",
            ),
            (
                vec!["sasl.username=a"],
                Some(("/s/kafka", "\nsasl.username=b\n")),
                "/s/kafka line 2: sasl.username is given twice (also in --kafka-option",
            ),
            (
                vec![],
                Some(("/s/kafka", "hunter2")),
                "/s/kafka line 1: an option is not key=value",
            ),
        ] {
            let error = KafkaOptions::parse(&flags(&flag), file).unwrap_err();
            assert!(error.contains(expected), "{error:?} lacks {expected:?}");
            assert!(!error.contains("hunter2"), "{error:?} shows a value");
        }
    }

    #[test]
    fn debug_output_shows_keys_only() {
        let options = KafkaOptions::parse(&flags(&["sasl.password=hunter2"]), None).unwrap();
        let shown = format!("{options:?}");
        assert!(shown.contains("sasl.password") && !shown.contains("hunter2"), "{shown}");
    }
}
