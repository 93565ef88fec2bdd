//! The cut-offs, driven by raw clients: a request head or body that does not
//! come, a head too large, more connections than `--max-connections`, a
//! silent or never-ending gRPC call, metadata too large. Each is answered with
//! a clear status (or, where HTTP/2 cannot answer yet, a closed connection)
//! and the process stays healthy: the next client is served.

use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tonic::codegen::{Bytes, http};
use tonic::transport::Channel;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

use super::{Running, get, get_on, ingress, logs_app, raw_exchange, read_to_close, status_of};
use crate::common::{TempTopic, eventually};

const PATIENCE: Duration = Duration::from_secs(30);

/// The server still answers a new client: the cut-off cost it nothing.
async fn still_healthy(server: &Running) {
    let probes = server.admin.unwrap_or(server.http);
    let response = reqwest::get(format!("http://{probes}/healthz"))
        .await
        .expect("/healthz answers");
    assert_eq!(response.status(), 200);
}

async fn grpc_health(channel: Channel) -> Result<ServingStatus, tonic::Status> {
    let reply = HealthClient::new(channel).check(HealthCheckRequest::default()).await?;
    Ok(reply.into_inner().status())
}

async fn grpc_is_serving(server: &Running) {
    let channel = Channel::from_shared(format!("http://{}", server.grpc()))
        .expect("a URI")
        .connect()
        .await
        .expect("gRPC connects");
    assert_eq!(
        grpc_health(channel).await.expect("a health check"),
        ServingStatus::Serving
    );
}

async fn metric(server: &Running, series: &str) -> f64 {
    let probes = server.admin.unwrap_or(server.http);
    let text = reqwest::get(format!("http://{probes}/metrics"))
        .await
        .expect("/metrics")
        .text()
        .await
        .expect("metrics text");
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.trim().parse().ok())
        .unwrap_or(0.0)
}

#[tokio::test]
async fn a_request_head_that_never_ends_gets_408_and_the_connection_is_closed() {
    let topic = TempTopic::create("cutoff-head", 1).await;
    let flags = ["--header-timeout-ms", "1000"];
    for server in [ingress(&topic.name, &flags).await, logs_app(&flags).await] {
        let reply = raw_exchange(server.http, b"POST /votes HTTP/1.1\r\nHost: test\r\nContent-Ty").await;
        assert_eq!(status_of(&reply), 408, "{reply}");
        // A connection that sends nothing at all is closed too.
        let silent = raw_exchange(server.http, b"").await;
        assert!(silent.is_empty() || status_of(&silent) == 408, "{silent}");
        still_healthy(&server).await;
        server.stop().await;
    }
}

#[tokio::test]
async fn a_body_that_trickles_gets_408_body_timeout_and_the_connection_is_closed() {
    let topic = TempTopic::create("cutoff-body", 1).await;
    let ingress = ingress(&topic.name, &["--body-timeout-ms", "200"]).await;
    let reply = raw_exchange(
        ingress.http,
        b"POST /votes HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\nContent-Length: 200\r\n\r\n{\"name\": ",
    )
    .await;
    assert_eq!(status_of(&reply), 408, "{reply}");
    assert!(reply.to_ascii_lowercase().contains("connection: close"), "{reply}");
    let body = reply.split("\r\n\r\n").nth(1).expect("a body");
    let body: serde_json::Value = serde_json::from_str(body).expect("a JSON error");
    assert_eq!(body["error"], "body_timeout", "{body}");
    let refused = metric(
        &ingress,
        "votestream_ingress_requests_refused_total{route=\"http\",reason=\"body_timeout\"}",
    )
    .await;
    assert_eq!(refused, 1.0);
    still_healthy(&ingress).await;
    ingress.stop().await;
}

#[tokio::test]
async fn a_request_head_too_large_gets_431() {
    let logs = logs_app(&[]).await;
    // actix-http takes at most 96 headers (and 128 KiB of head).
    let mut request = String::from("GET /healthz HTTP/1.1\r\nHost: test\r\n");
    for n in 0..100 {
        request.push_str(&format!("X-Padding-{n}: {n}\r\n"));
    }
    request.push_str("\r\n");
    let reply = raw_exchange(logs.http, request.as_bytes()).await;
    assert_eq!(status_of(&reply), 431, "{reply}");

    // One header of 200 KiB: the server answers before it has read it all.
    let mut stream = TcpStream::connect(logs.http).await.expect("connects");
    let huge = format!(
        "GET /healthz HTTP/1.1\r\nHost: test\r\nX-Huge: {}\r\n\r\n",
        "a".repeat(200 * 1024)
    );
    let (mut read, mut write) = stream.split();
    let (_, reply) = tokio::join!(write.write_all(huge.as_bytes()), async {
        let mut reply = Vec::new();
        let _ = tokio::time::timeout(PATIENCE, tokio::io::AsyncReadExt::read_to_end(&mut read, &mut reply)).await;
        String::from_utf8_lossy(&reply).into_owned()
    });
    assert_eq!(status_of(&reply), 431, "{reply}");
    still_healthy(&logs).await;
    logs.stop().await;
}

#[tokio::test]
async fn past_max_connections_a_new_http_connection_gets_503_and_is_closed() {
    let topic = TempTopic::create("cutoff-conns", 1).await;
    let flags = ["--max-connections", "2", "--admin-addr", "127.0.0.1:0"];
    // GET /votes is 405 on the ingress; /page.css is 200 on the logs app.
    for (server, process, path, served) in [
        (ingress(&topic.name, &flags).await, "ingress", "/votes", 405),
        (logs_app(&flags).await, "logs", "/page.css", 200),
    ] {
        let mut first = TcpStream::connect(server.http).await.expect("connects");
        let mut second = TcpStream::connect(server.http).await.expect("connects");
        assert_eq!(get_on(&mut first, path).await, served);
        assert_eq!(get_on(&mut second, path).await, served);

        let request = format!("GET {path} HTTP/1.1\r\nHost: test\r\n\r\n");
        let reply = raw_exchange(server.http, request.as_bytes()).await;
        assert_eq!(status_of(&reply), 503, "{reply}");
        assert!(reply.contains("too_many_connections"), "{reply}");
        assert!(reply.to_ascii_lowercase().contains("retry-after: 1"), "{reply}");

        // The admitted ones go on; the probes, on the admin port, were never counted.
        assert_eq!(get_on(&mut first, path).await, served);
        still_healthy(&server).await;
        let open = format!("votestream_{process}_connections_open{{listener=\"http\"}}");
        let refused = format!("votestream_{process}_connections_refused_total{{listener=\"http\"}}");
        assert_eq!(metric(&server, &open).await, 2.0);
        assert_eq!(metric(&server, &refused).await, 1.0);

        // Once one leaves, a newcomer is served.
        drop(first);
        eventually("a slot to free up", PATIENCE, || async {
            let mut newcomer = TcpStream::connect(server.http).await.ok()?;
            let request = format!("GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n");
            newcomer.write_all(request.as_bytes()).await.ok()?;
            let reply = read_to_close(&mut newcomer).await;
            (status_of(&reply) == served).then_some(())
        })
        .await;
        drop(second);
        server.stop().await;
    }
}

#[tokio::test]
async fn past_max_connections_a_new_grpc_connection_is_closed_at_once() {
    let topic = TempTopic::create("cutoff-grpc-conns", 1).await;
    let ingress = ingress(&topic.name, &["--max-connections", "1"]).await;
    let url = format!("http://{}", ingress.grpc());
    let first = Channel::from_shared(url.clone())
        .expect("a URI")
        .connect()
        .await
        .expect("connects");
    assert_eq!(
        grpc_health(first.clone()).await.expect("served"),
        ServingStatus::Serving
    );

    let second = match Channel::from_shared(url.clone()).expect("a URI").connect().await {
        Err(e) => format!("connect: {e:?}"),
        Ok(channel) => {
            let status = grpc_health(channel)
                .await
                .expect_err("a connection past the cap is refused");
            // The connection closed under the call: a transport error, as tonic reports it.
            let code = status.code();
            assert!(
                code == tonic::Code::Unavailable || code == tonic::Code::Cancelled,
                "{status:?}"
            );
            format!("{status:?}")
        }
    };
    assert!(!second.is_empty());
    let refused = metric(
        &ingress,
        "votestream_ingress_connections_refused_total{listener=\"grpc\"}",
    )
    .await;
    assert!(refused >= 1.0, "refused {refused}");

    drop(first);
    eventually("a slot to free up", PATIENCE, || async {
        let channel = Channel::from_shared(url.clone()).ok()?.connect().await.ok()?;
        grpc_health(channel).await.ok()
    })
    .await;
    ingress.stop().await;
}

#[tokio::test]
async fn a_grpc_connection_that_sends_nothing_is_closed_after_the_header_timeout() {
    let topic = TempTopic::create("cutoff-grpc-silent", 1).await;
    let ingress = ingress(&topic.name, &["--header-timeout-ms", "1000"]).await;
    let mut silent = TcpStream::connect(ingress.grpc()).await.expect("connects");
    let reply = read_to_close(&mut silent).await;
    assert!(reply.is_empty(), "nothing is said to a silent client: {reply:?}");
    grpc_is_serving(&ingress).await;
    ingress.stop().await;
}

#[tokio::test]
async fn a_grpc_call_whose_message_never_comes_is_cancelled() {
    let topic = TempTopic::create("cutoff-grpc-slow", 1).await;
    let flags = ["--body-timeout-ms", "200", "--produce-timeout-ms", "300"];
    let ingress = ingress(&topic.name, &flags).await;
    let tcp = TcpStream::connect(ingress.grpc()).await.expect("connects");
    let (client, connection) = h2::client::handshake(tcp).await.expect("an HTTP/2 handshake");
    tokio::spawn(connection);
    let mut client = client.ready().await.expect("ready");
    let request = http::Request::post(format!("http://{}/votes.v1.VoteService/CastVote", ingress.grpc()))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(())
        .expect("a request");
    let (response, mut body) = client.send_request(request, false).expect("the call starts");
    // A message header announcing 100 bytes, then nothing.
    body.send_data(Bytes::from_static(&[0, 0, 0, 0, 100]), false)
        .expect("a first frame");
    let response = tokio::time::timeout(PATIENCE, response)
        .await
        .expect("an answer")
        .expect("a response");
    // tonic answers an error as "trailers only": the status is in the headers.
    let status = response.headers().get("grpc-status").expect("a gRPC status");
    assert_eq!(status, "1", "CANCELLED: {:?}", response.headers());
    grpc_is_serving(&ingress).await;
    ingress.stop().await;
}

#[tokio::test]
async fn grpc_metadata_over_the_header_list_limit_is_refused() {
    let topic = TempTopic::create("cutoff-grpc-header", 1).await;
    let ingress = ingress(&topic.name, &[]).await;
    let channel = Channel::from_shared(format!("http://{}", ingress.grpc()))
        .expect("a URI")
        .connect()
        .await
        .expect("connects");
    let mut request = tonic::Request::new(HealthCheckRequest::default());
    let huge = "a".repeat(100 * 1024);
    request
        .metadata_mut()
        .insert("x-huge", huge.parse().expect("ASCII metadata"));
    let status = HealthClient::new(channel.clone())
        .check(request)
        .await
        .expect_err("metadata over 64 KiB is refused");
    // h2 answers 431 (Request Header Fields Too Large), which tonic reports as UNKNOWN.
    assert!(status.message().contains("431"), "{status:?}");
    // The same connection serves the next call.
    assert_eq!(grpc_health(channel).await.expect("served"), ServingStatus::Serving);
    ingress.stop().await;
}

#[tokio::test]
async fn a_tls_handshake_that_stalls_is_cut_off_on_every_listener() {
    let pki = super::certs::Pki::new();
    let topic = TempTopic::create("cutoff-handshake", 1).await;
    let mut flags = pki.server_flags();
    flags.extend(["--header-timeout-ms", "1000"]);
    let ingress = ingress(&topic.name, &flags).await;
    let logs = logs_app(&flags).await;
    for addr in [ingress.grpc(), ingress.http, logs.http] {
        // The first bytes of a TLS record, then nothing.
        let mut stalled = TcpStream::connect(addr).await.expect("connects");
        stalled.write_all(&[0x16, 0x03, 0x01]).await.expect("a first byte");
        read_to_close(&mut stalled).await;
    }
    let https = super::certs::Pki::https_client(&pki.ca);
    let page = get(&https, format!("https://{}/", logs.http), "the page").await;
    assert_eq!(page.status(), 200);
    let mut grpc = super::certs::Pki::grpc_client(ingress.grpc(), &pki.ca, None)
        .await
        .expect("a handshake");
    let vote = votestream::proto::Vote {
        name: Some("Alux Nahual".into()),
        album: Some("Alux Nahual".into()),
        year: Some(1985),
        rank: Some(9.0),
        voter: None,
        request_id: None,
    };
    grpc.cast_vote(vote).await.expect("a vote");
    ingress.stop().await;
    logs.stop().await;
}
