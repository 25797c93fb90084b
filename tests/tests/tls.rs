//! wss:// over real loopback sockets: every client runtime against every
//! server runtime through the TLS transport, certificates the client must
//! refuse, and a TLS port that receives plain HTTP or garbage.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use bytes::Bytes;
use ws_async::WsConfig;
use ws_async::WsError;
use ws_async::certgen::Validity;
use ws_async::tls::connect_tls;
use ws_async::tls::rustls::{CertificateError, Error as TlsError};
use ws_proto::{CloseCode, Message};
use ws_tests::tls::{Pki, server_tls};
use ws_tests::*;

#[test]
fn every_client_runtime_talks_to_every_server_runtime_over_wss() {
    let pki = Pki::new();
    let client = pki.client(None);
    for server_rt in RUNTIMES {
        let server = start_tls_echo(server_rt, pki.server(None));
        for client_rt in RUNTIMES {
            let url = format!("wss://localhost:{}/echo", server.addr.port());
            let big = Bytes::from(
                (0..1u32 << 20)
                    .map(|i| (i % 251) as u8)
                    .collect::<Vec<u8>>(),
            );
            let client = client.clone();
            on_runtime!(client_rt, |rt| async move {
                let (mut ws, _) = connect_tls(rt, &url, client, WsConfig::default())
                    .await
                    .expect("connect");
                for message in [
                    Message::text("hello"),
                    Message::binary(vec![0u8, 1, 2, 255]),
                    Message::Binary(big.clone()),
                ] {
                    ws.send(message.clone()).await.expect("send");
                    assert_eq!(
                        ws.recv().await.expect("recv"),
                        Some(message),
                        "{server_rt:?} <- {client_rt:?}"
                    );
                }
                ws.close(CloseCode::NORMAL, "done").await.expect("close");
                assert!(ws.close_info().expect("closed").clean);
            });
        }
        assert!(
            server.wait_active_at_most(0, Duration::from_secs(10)),
            "server freed the connections"
        );
    }
}

/// Connects to `url` with `pki`'s client settings; returns the TLS error.
fn refused(client_rt: Rt, url: &str, pki: &Pki) -> TlsError {
    let client = pki.client(None);
    let url = url.to_owned();
    on_runtime!(client_rt, |rt| async move {
        match connect_tls(rt, &url, client, WsConfig::default()).await {
            Err(WsError::Tls(e)) => {
                assert!(
                    WsError::Tls(e.clone())
                        .to_string()
                        .contains("TLS handshake failed"),
                    "a clear message"
                );
                e
            }
            Err(e) => panic!("not a TLS refusal: {e}"),
            Ok(_) => panic!("{url}: accepted a certificate it must refuse"),
        }
    })
}

#[test]
fn untrusted_expired_and_wrong_host_certificates_are_refused() {
    let pki = Pki::new();
    let stranger = Pki::new();
    let (cert, key) = pki.issue("expired", &["localhost"], Validity::Expired);
    let expired = start_tls_echo(Rt::Tokio, server_tls(cert, key, None));
    let (cert, key) = pki.issue("other-host", &["example.com"], Validity::Current);
    let other_host = start_tls_echo(Rt::Smol, server_tls(cert, key, None));
    let good = start_tls_echo(Rt::Tokio, pki.server(None));
    for client_rt in RUNTIMES {
        let e = refused(
            client_rt,
            &format!("wss://localhost:{}/", good.addr.port()),
            &stranger,
        );
        assert!(
            matches!(
                e,
                TlsError::InvalidCertificate(CertificateError::UnknownIssuer)
            ),
            "{e}"
        );
        let e = refused(
            client_rt,
            &format!("wss://localhost:{}/", expired.addr.port()),
            &pki,
        );
        assert!(e.to_string().contains("expired"), "{e}");
        let e = refused(
            client_rt,
            &format!("wss://localhost:{}/", other_host.addr.port()),
            &pki,
        );
        assert!(
            matches!(
                e,
                TlsError::InvalidCertificate(
                    CertificateError::NotValidForName
                        | CertificateError::NotValidForNameContext { .. }
                )
            ),
            "{e}"
        );
    }
}

#[test]
fn plain_http_and_garbage_on_a_tls_port_close_that_connection_only() {
    let pki = Pki::new();
    for server_rt in RUNTIMES {
        let server = start_tls_echo(server_rt, pki.server(None));
        for junk in [
            &b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n"[..],
            &[0xff; 300][..],
            &b"\x16\x03\x01\xff\xff garbage after a handshake record header"[..],
        ] {
            let mut tcp = TcpStream::connect(server.addr).expect("connect");
            tcp.set_read_timeout(Some(Duration::from_secs(20)))
                .expect("timeout");
            tcp.write_all(junk).expect("write");
            // At most an alert, then the end of the connection.
            let mut reply = Vec::new();
            tcp.read_to_end(&mut reply).expect("the server closes");
            assert!(
                reply.len() < 64,
                "{server_rt:?}: {} bytes back",
                reply.len()
            );
        }
        let url = format!("wss://localhost:{}/", server.addr.port());
        let client = pki.client(None);
        on_runtime!(server_rt, |rt| async move {
            let (mut ws, _) = connect_tls(rt, &url, client, WsConfig::default())
                .await
                .expect("others are still served");
            ws.send(Message::text("still here")).await.expect("send");
            assert_eq!(
                ws.recv().await.expect("recv"),
                Some(Message::text("still here"))
            );
        });
        assert!(server.wait_active_at_most(0, Duration::from_secs(10)));
    }
}

#[test]
fn mutual_tls_refuses_a_client_without_a_certificate_and_admits_one_with() {
    let pki = Pki::new();
    let alice = pki.ca.issue(&["alice"], Validity::Current).expect("cert");
    let server = start_tls_echo(
        Rt::Smol,
        pki.server(Some(ws_server::server::tls::ClientCertMode::Required)),
    );
    let url = format!("wss://localhost:{}/", server.addr.port());
    for client_rt in RUNTIMES {
        let (without, with) = (pki.client(None), pki.client(Some(&alice)));
        let url = url.clone();
        on_runtime!(client_rt, |rt| async move {
            match connect_tls(rt.clone(), &url, without, WsConfig::default()).await {
                Err(WsError::Tls(e)) => assert!(
                    matches!(e, TlsError::AlertReceived(_)),
                    "{client_rt:?}: {e}"
                ),
                Err(e) => panic!("{client_rt:?}: not a TLS refusal: {e}"),
                Ok(_) => panic!("{client_rt:?}: admitted without a certificate"),
            }
            let (mut ws, _) = connect_tls(rt, &url, with, WsConfig::default())
                .await
                .expect("with a certificate");
            ws.send(Message::text("mtls")).await.expect("send");
            assert_eq!(ws.recv().await.expect("recv"), Some(Message::text("mtls")));
        });
    }
}
