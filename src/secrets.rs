//! Secrets read from files at start (`--redis-url-file`,
//! `--mongodb-uri-file`, `--kafka-options-file`), so that a Kubernetes Secret
//! mounted as a volume reaches the process without passing through its
//! environment or command line. Errors name the flag and the file, never
//! what the file holds.

use std::path::Path;

use anyhow::Context as _;

/// The content of a secret file, its trailing line breaks removed (as
/// `echo` or an editor leaves them); an empty file is an error.
pub fn read_secret_file(path: &Path, flag: &str) -> anyhow::Result<String> {
    let text = std::fs::read_to_string(path).with_context(|| format!("{flag}: cannot read {}", path.display()))?;
    let value = text.trim_end_matches(['\n', '\r']);
    anyhow::ensure!(!value.trim().is_empty(), "{flag}: {} is empty", path.display());
    Ok(value.to_owned())
}

#[cfg(test)]
mod tests {
    use clap::Parser as _;

    use super::*;
    use crate::config::{Cli, Command};

    fn secret_file(name: &str, content: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("votestream-secrets-{}", uuid::Uuid::now_v7()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(name);
        std::fs::write(&path, content).unwrap();
        path
    }

    fn loaded(args: &[&str]) -> anyhow::Result<Command> {
        let mut command = Cli::try_parse_from(args)?.command;
        command.load_secrets()?;
        Ok(command)
    }

    #[test]
    fn a_secret_file_loses_its_trailing_line_break_only() {
        let path = secret_file("url", "redis://u:p%20w@h:6379 \r\n\n");
        assert_eq!(
            read_secret_file(&path, "--redis-url-file").unwrap(),
            "redis://u:p%20w@h:6379 "
        );
    }

    #[test]
    fn a_missing_or_empty_file_is_named_with_its_flag() {
        let empty = secret_file("empty", "\n");
        let error = read_secret_file(&empty, "--mongodb-uri-file").unwrap_err().to_string();
        assert!(
            error.contains("--mongodb-uri-file") && error.contains("is empty"),
            "{error}"
        );
        let missing = empty.with_file_name("missing");
        let error = format!("{:#}", read_secret_file(&missing, "--redis-url-file").unwrap_err());
        assert!(
            error.contains("--redis-url-file: cannot read") && error.contains("missing"),
            "{error}"
        );
    }

    #[test]
    fn store_addresses_and_kafka_options_come_from_their_files() {
        let redis = secret_file("redis", "rediss://votestream:s3cret@redis:6380\n");
        let mongo = secret_file("mongo", "mongodb://votestream:s3cret@mongodb:27017/?authSource=admin\n");
        let kafka = secret_file("kafka", "sasl.username=votestream\nsasl.password=s3cret\n");
        let command = loaded(&[
            "votestream",
            "consumer",
            "--redis-url-file",
            redis.to_str().unwrap(),
            "--mongodb-uri-file",
            mongo.to_str().unwrap(),
            "--kafka-options-file",
            kafka.to_str().unwrap(),
            "--kafka-option",
            "security.protocol=SASL_PLAINTEXT",
            "--kafka-option",
            "sasl.mechanism=SCRAM-SHA-512",
        ])
        .unwrap();
        let Command::Consumer(settings) = command else {
            panic!("consumer")
        };
        assert_eq!(settings.redis.redis_url, "rediss://votestream:s3cret@redis:6380");
        assert_eq!(
            settings.mongo.mongodb_uri,
            "mongodb://votestream:s3cret@mongodb:27017/?authSource=admin"
        );
        let options = &settings.kafka.kafka_options;
        assert_eq!(options.get("sasl.password"), Some("s3cret"));
        assert_eq!(options.get("security.protocol"), Some("SASL_PLAINTEXT"));
        assert!(options.authenticates());
    }

    #[test]
    fn a_url_given_both_as_flag_and_as_file_is_refused() {
        let redis = secret_file("redis", "redis://h:6379\n");
        let error = loaded(&[
            "votestream",
            "logs",
            "--redis-url",
            "redis://:s3cret@h:6379",
            "--redis-url-file",
            redis.to_str().unwrap(),
        ])
        .unwrap_err()
        .to_string();
        assert!(
            error.contains("--redis-url") && error.contains("cannot be used with"),
            "{error}"
        );
        assert!(!error.contains("s3cret"), "{error}");
    }

    #[test]
    fn each_subcommand_loads_the_files_of_the_stores_it_reaches() {
        let mongo = secret_file("mongo", "mongodb://m:27017\n");
        let Command::Logs(logs) =
            loaded(&["votestream", "logs", "--mongodb-uri-file", mongo.to_str().unwrap()]).unwrap()
        else {
            panic!("logs")
        };
        assert_eq!(logs.mongo.mongodb_uri, "mongodb://m:27017");
        let Command::All(all) = loaded(&["votestream", "all", "--kafka-option", "client.rack=r1"]).unwrap() else {
            panic!("all")
        };
        assert_eq!(all.kafka.kafka_options.get("client.rack"), Some("r1"));
        assert!(matches!(
            loaded(&["votestream", "recount", "--kafka-option", "acks=0"]),
            Err(e) if e.to_string().contains("acks cannot be set")
        ));
    }
}
