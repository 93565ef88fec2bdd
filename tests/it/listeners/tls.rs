//! TLS on the three public servers, with real handshakes: a client that
//! trusts the test CA gets through, one that does not is refused, gRPC with
//! `--tls-client-ca` takes only clients with a certificate from that CA, and
//! without the flags everything speaks plain text as before.

use serde_json::json;
use votestream::proto::vote_service_client::VoteServiceClient;

use super::certs::{Pki, path};
use super::{get, ingress, logs_app};
use crate::common::TempTopic;

use crate::ingress::support::grpc_vote as vote;

fn json_vote(name: &str) -> serde_json::Value {
    json!({"name": name, "album": "Álbum", "year": 2001, "rank": 7.25})
}

/// A gRPC client that could not cast a vote: refused at the handshake, or its
/// first call failed (with TLS 1.3 the server judges the client's certificate
/// after the client considers the handshake done).
async fn grpc_refused(client: Result<VoteServiceClient<tonic::transport::Channel>, tonic::transport::Error>) -> String {
    match client {
        Err(e) => format!("handshake: {e:?}"),
        Ok(mut client) => match client.cast_vote(vote("Intruso")).await {
            Err(status) => format!("call: {status:?}"),
            Ok(reply) => panic!("a refused client cast a vote: {reply:?}"),
        },
    }
}

#[tokio::test]
async fn the_ingress_takes_votes_over_tls_on_grpc_and_http() {
    let pki = Pki::new();
    let topic = TempTopic::create("tls", 1).await;
    let ingress = ingress(&topic.name, &pki.server_flags()).await;

    let mut grpc = Pki::grpc_client(ingress.grpc(), &pki.ca, None)
        .await
        .expect("a TLS handshake on gRPC");
    let reply = grpc
        .cast_vote(vote("Alux Nahual"))
        .await
        .expect("a vote over gRPC and TLS");
    assert!(!reply.get_ref().id.is_empty());

    let https = Pki::https_client(&pki.ca);
    let response = https
        .post(format!("https://{}/votes", ingress.http))
        .json(&json_vote("Bohemia Suburbana"))
        .send()
        .await
        .expect("a TLS handshake on HTTP");
    assert_eq!(response.status(), 200);
    let healthz = get(&https, format!("https://{}/healthz", ingress.http), "/healthz over TLS").await;
    assert_eq!(healthz.status(), 200);

    // The TLS port speaks nothing else.
    let plain = reqwest::Client::new()
        .get(format!("http://{}/healthz", ingress.http))
        .send()
        .await;
    assert!(plain.is_err(), "plain HTTP on the TLS port: {plain:?}");
    ingress.stop().await;
}

#[tokio::test]
async fn a_client_that_does_not_trust_the_servers_ca_is_refused_everywhere() {
    let pki = Pki::new();
    let topic = TempTopic::create("tls-untrusted", 1).await;
    let ingress = ingress(&topic.name, &pki.server_flags()).await;
    let logs = logs_app(&pki.server_flags()).await;

    let stranger = Pki::https_client(&pki.stranger_ca);
    for url in [
        format!("https://{}/votes", ingress.http),
        format!("https://{}/", logs.http),
    ] {
        let refused = stranger.get(&url).send().await;
        let error = refused.expect_err("a client that does not trust the CA is refused");
        assert!(error.is_connect(), "{url}: {error:?}");
    }
    grpc_refused(Pki::grpc_client(ingress.grpc(), &pki.stranger_ca, None).await).await;

    // The servers go on serving those that trust them.
    let https = Pki::https_client(&pki.ca);
    let page = get(&https, format!("https://{}/", logs.http), "the page").await;
    assert_eq!(page.status(), 200);
    let mut grpc = Pki::grpc_client(ingress.grpc(), &pki.ca, None)
        .await
        .expect("gRPC over TLS");
    grpc.cast_vote(vote("Viernes Verde")).await.expect("a vote");
    ingress.stop().await;
    logs.stop().await;
}

#[tokio::test]
async fn with_a_client_ca_grpc_takes_only_clients_holding_a_certificate_from_it() {
    let pki = Pki::new();
    let topic = TempTopic::create("mtls", 1).await;
    let mut flags = pki.server_flags();
    flags.extend(["--tls-client-ca", path(&pki.ca_file)]);
    let ingress = ingress(&topic.name, &flags).await;

    let mut front_end = Pki::grpc_client(ingress.grpc(), &pki.ca, Some(&pki.client))
        .await
        .expect("a handshake with a client certificate");
    front_end
        .cast_vote(vote("Ricardo Arjona"))
        .await
        .expect("a vote from the front-end");

    let without = grpc_refused(Pki::grpc_client(ingress.grpc(), &pki.ca, None).await).await;
    let stranger = grpc_refused(Pki::grpc_client(ingress.grpc(), &pki.ca, Some(&pki.stranger_client)).await).await;
    // The server's TLS alerts say why.
    assert!(without.contains("CertificateRequired"), "{without}");
    assert!(stranger.contains("UnknownCA"), "{stranger}");

    // HTTP asks for no client certificate.
    let response = Pki::https_client(&pki.ca)
        .post(format!("https://{}/votes", ingress.http))
        .json(&json_vote("Malacates Trébol Shop"))
        .send()
        .await
        .expect("HTTPS without a client certificate");
    assert_eq!(response.status(), 200);
    // The front-end's connection is still good.
    front_end.cast_vote(vote("Ricardo Arjona")).await.expect("another vote");
    ingress.stop().await;
}

#[tokio::test]
async fn the_logs_app_serves_its_page_and_api_over_tls() {
    let pki = Pki::new();
    let logs = logs_app(&pki.server_flags()).await;
    let https = Pki::https_client(&pki.ca);
    let page = get(&https, format!("https://{}/", logs.http), "the page over TLS").await;
    assert_eq!(page.status(), 200);
    assert!(page.text().await.expect("html").contains("<html"));
    let logs_page = get(&https, format!("https://{}/logs?limit=1", logs.http), "/logs over TLS").await;
    assert_eq!(logs_page.status(), 200);
    logs.stop().await;
}

#[tokio::test]
async fn without_tls_flags_the_three_servers_speak_plain_text_as_before() {
    let topic = TempTopic::create("plain", 1).await;
    let ingress = ingress(&topic.name, &[]).await;
    let logs = logs_app(&[]).await;

    let mut grpc = VoteServiceClient::connect(format!("http://{}", ingress.grpc()))
        .await
        .expect("plain gRPC");
    grpc.cast_vote(vote("Alux Nahual"))
        .await
        .expect("a vote over plain gRPC");
    let plain = reqwest::Client::new();
    let response = plain
        .post(format!("http://{}/votes", ingress.http))
        .json(&json_vote("Alux Nahual"))
        .send()
        .await
        .expect("plain HTTP");
    assert_eq!(response.status(), 200);
    // Without --admin-addr the probes and metrics stay on the public listener.
    for base in [format!("http://{}", ingress.http), format!("http://{}", logs.http)] {
        for path in ["/healthz", "/metrics"] {
            let response = plain.get(format!("{base}{path}")).send().await.expect("a probe");
            assert_eq!(response.status(), 200, "{base}{path}");
        }
    }
    let page = get(&plain, format!("http://{}/", logs.http), "the page").await;
    assert_eq!(page.status(), 200);

    // A TLS client gets no handshake from a plain listener.
    let pki = Pki::new();
    let tls = Pki::https_client(&pki.ca)
        .get(format!("https://{}/healthz", ingress.http))
        .send()
        .await;
    assert!(tls.is_err(), "TLS against a plain listener: {tls:?}");
    ingress.stop().await;
    logs.stop().await;
}
