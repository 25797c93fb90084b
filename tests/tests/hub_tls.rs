//! The hub server on a TLS port: the scenario suite's basic case over
//! wss://, client certificates naming the user, /healthz and /metrics over
//! the same TLS port, garbage counted, and the per-IP limit applied before
//! any TLS work.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use ws_async::certgen::Validity;
use ws_async::tls::rustls::ClientConfig;
use ws_async::{Runtime, WsError};
use ws_server::server::ServerConfig;
use ws_server::server::tls::ClientCertMode;
use ws_tests::hub_client::*;
use ws_tests::tls::{Pki, https_get, https_metrics, tls_connect};
use ws_tests::*;

/// (server runtime, client runtime): all four pairs.
fn pairs() -> impl Iterator<Item = (Rt, Rt)> {
    RUNTIMES
        .into_iter()
        .flat_map(|s| RUNTIMES.into_iter().map(move |c| (s, c)))
}

fn tls_config(pki: &Pki, client_cert: Option<ClientCertMode>) -> ServerConfig {
    let mut config = ServerConfig::default();
    config.tls = Some(pki.server(client_cert));
    config
}

async fn connect_tls<R: Runtime>(
    rt: &R,
    addr: SocketAddr,
    target: &str,
    tls: &Arc<ClientConfig>,
) -> Result<HubClient<R>, WsError> {
    let options = ConnectOptions {
        tls: Some(tls.clone()),
        ..ConnectOptions::default()
    };
    HubClient::connect_with(rt.clone(), addr, target, &options).await
}

#[test]
fn join_publish_receive_over_tls_on_every_runtime_pair() {
    let pki = Pki::new();
    let client = pki.client(None);
    for (srv, cli) in pairs() {
        let server = start_hub(srv, tls_config(&pki, None));
        let addr = server.addr;
        let tls = client.clone();
        on_runtime!(cli, |rt| async move {
            let mut a = connect_tls(&rt, addr, "/ws", &tls).await.expect("a");
            let mut b = connect_tls(&rt, addr, "/ws", &tls).await.expect("b");
            assert_eq!(a.join("lobby").await["type"], "ack");
            assert_eq!(b.join("lobby").await["type"], "ack");
            let ack = a.publish("lobby", "m1", json!({"text": "hi"})).await;
            assert_eq!(ack, json!({"type": "ack", "op": "publish", "id": "m1"}));
            let got = b.expect("message").await;
            assert_eq!(
                (got["room"].clone(), got["data"].clone()),
                (json!("lobby"), json!({"text": "hi"})),
                "{srv:?} <- {cli:?}"
            );
            a.close().await;
            b.close().await;
        });
        let metrics = https_metrics(addr, client.clone());
        assert!(metrics["ws_tls_handshakes_total"] >= 2, "{metrics:?}");
        assert_eq!(metrics["ws_publishes_total"], 1);
    }
}

#[test]
fn healthz_and_metrics_are_served_on_the_tls_port() {
    let pki = Pki::new();
    let client = pki.client(None);
    for srv in RUNTIMES {
        let server = start_hub(srv, tls_config(&pki, None));
        let reply = https_get(server.addr, client.clone(), "/healthz");
        assert_eq!(
            (reply.status, reply.body.as_str()),
            (200, "ok\n"),
            "{srv:?}"
        );
        let metrics = https_metrics(server.addr, client.clone());
        assert!(metrics.contains_key("ws_tls_handshake_failures_total"));
    }
}

#[test]
fn a_required_client_certificate_names_the_user_and_its_absence_is_refused() {
    let pki = Pki::new();
    let alice = pki.ca.issue(&["alice"], Validity::Current).expect("cert");
    let with_cert = pki.client(Some(&alice));
    let without = pki.client(None);
    for (srv, cli) in pairs() {
        // A token secret without anonymous access: the certificate is the
        // credential.
        let mut config = tls_config(&pki, Some(ClientCertMode::Required));
        config.auth_secret = Some("secret".into());
        config.allow_anonymous = false;
        let server = start_hub(srv, config);
        let addr = server.addr;
        let (cert_tls, plain_tls) = (with_cert.clone(), without.clone());
        on_runtime!(cli, |rt| async move {
            let a = connect_tls(&rt, addr, "/ws", &cert_tls)
                .await
                .expect("with a certificate");
            assert_eq!(a.user(), "alice", "{srv:?} <- {cli:?}");
            // A token still wins over the certificate.
            let target = format!("/ws?token={}", token("secret", "bob"));
            let b = connect_tls(&rt, addr, &target, &cert_tls)
                .await
                .expect("token");
            assert_eq!(b.user(), "bob");
            // No certificate: TLS 1.3 lets the client finish its side, then
            // the server refuses; either way no welcome arrives.
            assert!(connect_tls(&rt, addr, "/ws", &plain_tls).await.is_err());
            a.close().await;
            b.close().await;
        });
        let failures = https_metrics(addr, with_cert.clone())["ws_tls_handshake_failures_total"];
        assert!(failures >= 1, "{srv:?}: the refused client is counted");
    }
}

#[test]
fn an_optional_client_certificate_is_used_when_presented() {
    let pki = Pki::new();
    let carol = pki.ca.issue(&["carol"], Validity::Current).expect("cert");
    for srv in RUNTIMES {
        let server = start_hub(srv, tls_config(&pki, Some(ClientCertMode::Optional)));
        let addr = server.addr;
        let (with_cert, without) = (pki.client(Some(&carol)), pki.client(None));
        on_runtime!(srv, |rt| async move {
            let c = connect_tls(&rt, addr, "/ws", &with_cert)
                .await
                .expect("cert");
            assert_eq!(c.user(), "carol");
            let anon = connect_tls(&rt, addr, "/ws", &without).await.expect("none");
            assert!(
                anon.user().starts_with("anon-"),
                "{srv:?}: {}",
                anon.welcome()
            );
            c.close().await;
            anon.close().await;
        });
    }
}

#[test]
fn garbage_on_the_tls_port_is_counted_and_closes_only_that_connection() {
    let pki = Pki::new();
    let client = pki.client(None);
    for srv in RUNTIMES {
        let server = start_hub(srv, tls_config(&pki, None));
        let addr = server.addr;
        let mut open = tls_connect(addr, client.clone()).expect("an open TLS connection");
        for junk in [
            &b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n"[..],
            &[0x16, 0x03, 0x01, 0x00, 0x05, 1, 2, 3, 4, 5][..],
        ] {
            let mut tcp = TcpStream::connect(addr).expect("connect");
            tcp.set_read_timeout(Some(WAIT)).expect("timeout");
            tcp.write_all(junk).expect("write");
            let mut reply = Vec::new();
            tcp.read_to_end(&mut reply).expect("closed by the server");
            assert!(
                !reply.starts_with(b"HTTP"),
                "{srv:?}: no HTTP on a TLS port"
            );
        }
        let metrics = https_metrics(addr, client.clone());
        assert_eq!(metrics["ws_tls_handshake_failures_total"], 2, "{srv:?}");
        // The connection opened before is still served.
        let reply = http_over(
            &mut open,
            "GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n",
        );
        assert_eq!(reply.status, 200);
    }
}

#[test]
fn the_per_ip_limit_applies_before_the_tls_handshake() {
    let pki = Pki::new();
    let client = pki.client(None);
    for srv in RUNTIMES {
        let mut config = tls_config(&pki, None);
        config.max_connections_per_ip = 1;
        let server = start_hub(srv, config);
        let addr = server.addr;
        let mut held = tls_connect(addr, client.clone()).expect("the one allowed connection");
        // Over the limit: closed at once, without a ServerHello, so
        // nothing comes back, not even an alert.
        assert!(tls_connect(addr, client.clone()).is_err(), "{srv:?}");
        // The held connection still works, and the counters tell what
        // happened: a refusal, no TLS failure.
        let metrics = parse_metrics(&http_over(
            &mut held,
            "GET /metrics HTTP/1.1\r\nHost: localhost\r\n\r\n",
        ));
        assert_eq!(metrics["ws_ip_limit_refusals_total"], 1, "{srv:?}");
        assert_eq!(metrics["ws_tls_handshake_failures_total"], 0, "{srv:?}");
        drop(held);
        assert!(server.wait_active_at_most(0, Duration::from_secs(10)));
    }
}
