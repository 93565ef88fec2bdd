//! Kafka as the tests and the benchmark look at it from outside the consumer.

use std::collections::BTreeMap;
use std::time::Duration;

use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};

/// A reusable reader of one group's committed offsets on some partitions of a topic.
pub struct CommittedReader {
    client: BaseConsumer,
    partitions: TopicPartitionList,
}

impl CommittedReader {
    pub fn new(
        brokers: &str,
        group: &str,
        topic: &str,
        partitions: impl IntoIterator<Item = i32>,
    ) -> anyhow::Result<Self> {
        let client: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", brokers)
            .set("group.id", group)
            .create()?;
        let mut list = TopicPartitionList::new();
        for p in partitions {
            list.add_partition(topic, p);
        }
        Ok(CommittedReader {
            client,
            partitions: list,
        })
    }

    /// The group's committed offset per partition (-1 where none).
    pub fn read(&self) -> anyhow::Result<BTreeMap<i32, i64>> {
        let committed = self
            .client
            .committed_offsets(self.partitions.clone(), Duration::from_secs(10))?;
        Ok(committed
            .elements()
            .iter()
            .map(|e| match e.offset() {
                Offset::Offset(o) => (e.partition(), o),
                _ => (e.partition(), -1),
            })
            .collect())
    }
}

/// The end (high watermark) of each partition of `topic`.
pub fn high_watermarks(brokers: &str, topic: &str) -> anyhow::Result<BTreeMap<i32, i64>> {
    let client: BaseConsumer = ClientConfig::new().set("bootstrap.servers", brokers).create()?;
    let metadata = client.fetch_metadata(Some(topic), Duration::from_secs(10))?;
    let partitions: Vec<i32> = metadata
        .topics()
        .first()
        .map(|t| t.partitions().iter().map(|p| p.id()).collect())
        .unwrap_or_default();
    partitions
        .into_iter()
        .map(|p| Ok((p, client.fetch_watermarks(topic, p, Duration::from_secs(10))?.1)))
        .collect()
}

fn admin(brokers: &str) -> anyhow::Result<AdminClient<DefaultClientContext>> {
    Ok(ClientConfig::new().set("bootstrap.servers", brokers).create()?)
}

/// Creates `name` with `partitions` partitions, replicated once (the local stack has one broker).
pub async fn create_topic(brokers: &str, name: &str, partitions: i32) -> anyhow::Result<()> {
    let topic = NewTopic::new(name, partitions, TopicReplication::Fixed(1));
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
    for result in admin(brokers)?.create_topics([&topic], &options).await? {
        result.map_err(|(topic, e)| anyhow::anyhow!("creating topic {topic}: {e}"))?;
    }
    Ok(())
}

/// Deletes `name`.
pub async fn delete_topic(brokers: &str, name: &str) -> anyhow::Result<()> {
    for result in admin(brokers)?.delete_topics(&[name], &AdminOptions::new()).await? {
        result.map_err(|(topic, e)| anyhow::anyhow!("deleting topic {topic}: {e}"))?;
    }
    Ok(())
}
