//! Headless Chromium as a real WebSocket peer of both runtimes' servers,
//! driven over the DevTools protocol: the README's browser snippet against
//! `serve` over `wss://` (a certificate made at test time, trusted by its
//! SPKI pin), and permessage-deflate negotiated with `echo` and `serve`
//! carrying a 100 KB JSON message each way.
//!
//! Needs `chromium` (scripts/install-deps.sh installs it).

use serde_json::{Value, json};
use ws_async::WsConfig;
use ws_async::certgen::Validity;
use ws_server::server::{ServerConfig, Settings};
use ws_tests::browser::{Browser, block_on};
use ws_tests::tls::{Pki, server_tls, spki_pin};
use ws_tests::{RUNTIMES, start_echo, start_hub};

/// Installs `openWs(url)` in the page: a promise of an open WebSocket
/// whose `next()` is a promise of the next text message (bounded).
const HELPERS: &str = "window.openWs = (url) => new Promise((resolve, reject) => { \
       const ws = new WebSocket(url); const queue = []; const waiters = []; \
       ws.onmessage = (e) => { const w = waiters.shift(); if (w) w(e.data); else queue.push(e.data); }; \
       ws.next = () => new Promise((r, j) => { \
         if (queue.length) { r(queue.shift()); return; } \
         waiters.push(r); setTimeout(() => j(new Error('no message in time')), 20000); }); \
       ws.onopen = () => resolve(ws); \
       ws.onerror = () => reject(new Error('cannot open ' + url)); }); \
     window.bigJson = () => { const items = []; let x = 7; let len = 0; \
       while (len < 100 * 1024) { x = (x * 1103515245 + 12345) % 2147483648; \
         const item = {i: items.length, key: x.toString(36), text: 'item ' + items.length + ' ' + x.toString(16)}; \
         items.push(item); len += JSON.stringify(item).length + 1; } \
       return {items}; }; true";

#[test]
fn readme_snippet_over_wss_in_chromium_on_both_runtimes() {
    let pki = Pki::new();
    let (cert, key) = pki.issue("server", &["localhost", "127.0.0.1"], Validity::Current);
    let tls = server_tls(cert, key.clone(), None);
    // Trusts exactly this key: no other certificate error is ignored.
    let pin = format!("--ignore-certificate-errors-spki-list={}", spki_pin(&key));
    block_on(async {
        let mut b = Browser::launch(&[pin]).await;
        for rt in RUNTIMES {
            let mut config = ServerConfig::default();
            config.tls = Some(tls.clone());
            let server = start_hub(rt, config);
            let page = b.open(&format!("https://{}/healthz", server.addr)).await;
            b.until(&page, "document.body.innerText.trim() === 'ok'")
                .await;
            // The README's lines, with the messages collected instead of
            // logged and the id kept.
            let js = format!(
                "new Promise((resolve, reject) => {{ const got = []; const id = crypto.randomUUID(); \
                   setTimeout(() => reject(new Error('only ' + JSON.stringify(got))), 20000); \
                   const ws = new WebSocket(\"wss://{}/ws\"); \
                   ws.onmessage = (e) => {{ got.push(JSON.parse(e.data)); \
                     if (got.length === 4) {{ ws.close(1000); resolve({{id, got}}); }} }}; \
                   ws.onerror = () => reject(new Error('error')); \
                   ws.onopen = () => {{ ws.send(JSON.stringify({{type: \"join\", room: \"lobby\"}})); \
                     ws.send(JSON.stringify({{type: \"publish\", room: \"lobby\", id, data: {{text: \"hi\"}}}})); }}; }})",
                server.addr
            );
            let r = b.eval(&page, &js).await;
            let id = r["id"].clone();
            let got = r["got"].as_array().expect("messages").clone();
            assert_eq!(got[0]["type"], "welcome", "{rt:?}: {got:?}");
            let user = got[0]["user"].clone();
            assert!(user.is_string(), "{rt:?}: {got:?}");
            let mut rest: Vec<Value> = got[1..].to_vec();
            for m in &mut rest {
                if m["type"] == "message" {
                    // The sequence number is the server's to choose.
                    assert!(m["seq"].is_u64(), "{m}");
                    m.as_object_mut().expect("object").remove("seq");
                }
            }
            rest.sort_by_key(|m| m.to_string());
            let mut expected = vec![
                json!({"type": "ack", "op": "join", "room": "lobby"}),
                json!({"type": "ack", "op": "publish", "id": id}),
                json!({"type": "message", "room": "lobby", "id": id, "from": user,
                       "data": {"text": "hi"}}),
            ];
            expected.sort_by_key(|m| m.to_string());
            assert_eq!(rest, expected, "{rt:?}");
        }
    });
}

/// `ws.extensions` names permessage-deflate.
fn assert_deflate(r: &Value, what: &str) {
    let extensions = r["extensions"].as_str().unwrap_or_default();
    assert!(
        extensions.starts_with("permessage-deflate"),
        "{what}: {extensions:?}"
    );
}

#[test]
fn chromium_negotiates_deflate_and_round_trips_100_kb_with_echo_and_serve() {
    // `serve`'s default max_message_size is 64 KiB: raised for 100 KB.
    let settings = Settings {
        max_message_size: Some(256 << 10),
        ..Settings::default()
    };
    // `echo` as its command line sets it up by default.
    let mut echo_config = WsConfig::default();
    echo_config.set_deflate("shared", 15).expect("deflate");
    block_on(async {
        let mut b = Browser::launch(&[]).await;
        for rt in RUNTIMES {
            let hub = start_hub(
                rt,
                ServerConfig::from_settings(&settings).expect("settings"),
            );
            let echo = start_echo(rt, echo_config.clone());
            // A loopback page, so the loopback sockets are same-site.
            let page = b.open(&format!("http://{}/healthz", hub.addr)).await;
            b.until(&page, "document.body.innerText.trim() === 'ok'")
                .await;
            b.eval(&page, HELPERS).await;

            let r = b
                .eval(
                    &page,
                    &format!(
                        "(async () => {{ const ws = await openWs('ws://{}/'); \
                           const sent = JSON.stringify(bigJson()); ws.send(sent); \
                           const got = await ws.next(); ws.close(1000); \
                           return {{extensions: ws.extensions, sent, got}}; }})()",
                        echo.addr
                    ),
                )
                .await;
            assert_deflate(&r, &format!("echo on {rt:?}"));
            let sent = r["sent"].as_str().expect("sent");
            assert!(sent.len() >= 100 * 1024, "{}", sent.len());
            assert!(r["got"] == sent, "echo on {rt:?}: the echo differs");

            let r = b
                .eval(
                    &page,
                    &format!(
                        "(async () => {{ const ws = await openWs('ws://{}/ws'); \
                           const welcome = JSON.parse(await ws.next()); \
                           ws.send(JSON.stringify({{type: 'join', room: 'big'}})); \
                           const joined = JSON.parse(await ws.next()); \
                           const data = bigJson(); \
                           ws.send(JSON.stringify({{type: 'publish', room: 'big', id: 'big-1', data}})); \
                           const after = [JSON.parse(await ws.next()), JSON.parse(await ws.next())]; \
                           ws.close(1000); \
                           return {{extensions: ws.extensions, welcome, joined, data, after}}; }})()",
                        hub.addr
                    ),
                )
                .await;
            assert_deflate(&r, &format!("serve on {rt:?}"));
            assert_eq!(r["welcome"]["type"], "welcome");
            assert_eq!(
                r["joined"],
                json!({"type": "ack", "op": "join", "room": "big"})
            );
            let after = r["after"].as_array().expect("after");
            let ack = json!({"type": "ack", "op": "publish", "id": "big-1"});
            assert!(after.contains(&ack), "serve on {rt:?}: {:?}", after.len());
            let delivered = after
                .iter()
                .find(|m| m["type"] == "message")
                .expect("the message delivered");
            assert_eq!(
                (&delivered["room"], &delivered["id"]),
                (&json!("big"), &json!("big-1"))
            );
            assert!(
                delivered["data"] == r["data"],
                "serve on {rt:?}: the delivered data differs"
            );
        }
    });
}
