//! Smoke tests: each proves one real connection with the crate the product uses.

use std::time::Duration;

use deadpool_redis::redis;
use futures_util::TryStreamExt;
use mongodb::bson::{Document, doc};
use rdkafka::ClientConfig;
use rdkafka::Message;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::producer::{FutureProducer, FutureRecord};

use crate::common::{TempTopic, kafka_brokers, mongodb_uri, redis_url, unique};

#[tokio::test]
async fn a_record_produced_to_kafka_is_consumed_back() {
    let topic = TempTopic::create("smoke", 1).await;
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", kafka_brokers())
        .set("enable.idempotence", "true")
        .create()
        .unwrap();
    let delivery = producer
        .send(
            FutureRecord::to(&topic.name).key("k1").payload("hello kafka"),
            Duration::from_secs(10),
        )
        .await
        .map_err(|(e, _)| e)
        .unwrap();
    assert_eq!((delivery.partition, delivery.offset), (0, 0));

    let consumer: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", kafka_brokers())
        .set("group.id", unique("smoke-group"))
        .set("auto.offset.reset", "earliest")
        .create()
        .unwrap();
    consumer.subscribe(&[&topic.name]).unwrap();
    let msg = tokio::time::timeout(Duration::from_secs(30), consumer.recv())
        .await
        .expect("a record within 30 s")
        .unwrap();
    assert_eq!(msg.key(), Some(&b"k1"[..]));
    assert_eq!(msg.payload(), Some(&b"hello kafka"[..]));
}

#[tokio::test]
async fn redis_hash_increments_are_read_back_through_the_pool() {
    let pool = deadpool_redis::Config::from_url(redis_url())
        .create_pool(Some(deadpool_redis::Runtime::Tokio1))
        .unwrap();
    let mut conn = pool.get().await.unwrap();
    let key = format!("{}:votes:by_band", unique("smoke"));
    for (band, n) in [("Bohemia Suburbana", 2), ("Alux Nahual", 3), ("Bohemia Suburbana", 5)] {
        let _: i64 = redis::cmd("HINCRBY")
            .arg(&key)
            .arg(band)
            .arg(n)
            .query_async(&mut conn)
            .await
            .unwrap();
    }
    let all: std::collections::HashMap<String, i64> =
        redis::cmd("HGETALL").arg(&key).query_async(&mut conn).await.unwrap();
    let _: i64 = redis::cmd("DEL").arg(&key).query_async(&mut conn).await.unwrap();
    assert_eq!(all.len(), 2);
    assert_eq!(all["Bohemia Suburbana"], 7);
    assert_eq!(all["Alux Nahual"], 3);
}

#[tokio::test]
async fn mongo_documents_inserted_together_are_found_again() {
    let client = mongodb::Client::with_uri_str(mongodb_uri()).await.unwrap();
    let db = client.database(&unique("smoke"));
    let logs = db.collection::<Document>("logs");
    logs.insert_many([
        doc! {"_id": "a", "name": "Alux Nahual"},
        doc! {"_id": "b", "name": "Bohemia Suburbana"},
    ])
    .await
    .unwrap();
    let found: Vec<Document> = logs
        .find(doc! {})
        .sort(doc! {"_id": 1})
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    db.drop().await.unwrap();
    let names: Vec<&str> = found.iter().map(|d| d.get_str("name").unwrap()).collect();
    assert_eq!(names, ["Alux Nahual", "Bohemia Suburbana"]);
}
