//! The browser client (`clients/js/ws-hub-client.js`) in headless
//! Chromium, driven over the DevTools protocol with the project's own
//! WebSocket client: publisher and subscriber pages (the demo page the
//! server serves, whose `window.hub` is the client) through the cutting
//! proxy, with the exactly-once check on a short run; and the demo page's
//! DOM (join, send, see the message and the connection state).
//!
//! Needs `chromium` (scripts/install-deps.sh installs it).

use std::time::Duration;

use serde_json::json;
use ws_server::server::ServerConfig;
use ws_tests::browser::{Browser, block_on};
use ws_tests::proxy::CuttingProxy;
use ws_tests::{Rt, start_hub};

const CONNECTED: &str = "typeof hub === 'object' && hub.state === 'connected'";

#[test]
fn browser_pages_exactly_once_through_cuts_and_the_demo_dom() {
    const PER_PUBLISHER: u64 = 30;
    let server = start_hub(Rt::Tokio, ServerConfig::default());
    let proxy = CuttingProxy::start(server.addr, 11, Duration::from_millis(400));
    let page = format!("http://{}/client/demo.html", proxy.addr);
    block_on(async {
        let mut b = Browser::launch(&[]).await;

        // The demo page: state, join, send, the message in the log.
        let demo = b.open(&page).await;
        b.until(
            &demo,
            "document.getElementById('state').textContent === 'connected'",
        )
        .await;
        b.eval(
            &demo,
            "document.getElementById('room').value = 'dom'; \
             document.getElementById('join').click(); true",
        )
        .await;
        b.until(
            &demo,
            "document.getElementById('rooms').textContent === 'in dom'",
        )
        .await;
        b.eval(
            &demo,
            "document.getElementById('text').value = 'hello dom'; \
             document.getElementById('send').click(); true",
        )
        .await;
        b.until(
            &demo,
            "document.getElementById('log').textContent.includes(': hello dom')",
        )
        .await;

        // Publishers and subscribers through the cutting proxy.
        let names = ["pub0", "pub1", "sub0", "sub1"];
        let mut pages = Vec::new();
        for name in names {
            let s = b.open(&page).await;
            b.until(&s, CONNECTED).await;
            let joined = b
                .eval(
                    &s,
                    "window.got = []; window.gaps = []; \
                     hub.addEventListener('message', (e) => { \
                       if (e.detail.room === 'chaos') got.push(e.detail.data); }); \
                     hub.addEventListener('gap', (e) => gaps.push(e.detail)); \
                     hub.join('chaos').then(() => true)",
                )
                .await;
            assert_eq!(joined, json!(true), "{name}");
            pages.push((name, s));
        }
        proxy.set_chaos(true);
        for (name, s) in &pages[..2] {
            b.eval(
                s,
                &format!(
                    "window.result = null; (async () => {{ const ps = []; \
                       for (let n = 1; n <= {PER_PUBLISHER}; n++) {{ \
                         ps.push(hub.publish('chaos', {{p: '{name}', n}})); \
                         await new Promise((r) => setTimeout(r, 25)); }} \
                       const r = await Promise.allSettled(ps); \
                       window.result = r.map((x) => x.status); }})(); true"
                ),
            )
            .await;
        }
        for (_, s) in &pages[..2] {
            b.until(s, "Array.isArray(window.result)").await;
            let statuses = b.eval(s, "window.result").await;
            let all_ok = statuses.as_array().is_some_and(|a| {
                a.len() as u64 == PER_PUBLISHER && a.iter().all(|v| v == "fulfilled")
            });
            assert!(all_ok, "{statuses}");
        }
        proxy.set_chaos(false);
        let expected: Vec<u64> = (1..=PER_PUBLISHER).collect();
        for (name, s) in &pages {
            b.until(
                s,
                &format!("gaps.length > 0 || got.length >= {}", 2 * PER_PUBLISHER),
            )
            .await;
            let got = b.eval(s, "got").await;
            let gaps = b.eval(s, "gaps").await;
            for p in ["pub0", "pub1"] {
                let ns: Vec<u64> = got
                    .as_array()
                    .expect("array")
                    .iter()
                    .filter(|d| d["p"] == p)
                    .filter_map(|d| d["n"].as_u64())
                    .collect();
                if gaps.as_array().is_some_and(Vec::is_empty) {
                    assert_eq!(ns, expected, "{name} from {p}");
                } else {
                    assert!(ns.windows(2).all(|w| w[0] < w[1]), "{name}: {ns:?}");
                }
            }
        }
        assert!(proxy.cuts() > 0, "the proxy never cut");
    });
}
