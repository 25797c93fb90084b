//! The browser client (`clients/js/ws-hub-client.js`) in headless
//! Chromium, driven over the DevTools protocol with the project's own
//! WebSocket client: publisher and subscriber pages (the demo page the
//! server serves, whose `window.hub` is the client) through the cutting
//! proxy, with the exactly-once check on a short run; and the demo page's
//! DOM (join, send, see the message and the connection state).
//!
//! Needs `chromium` (scripts/install-deps.sh installs it).

use std::io::{BufRead as _, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::{Value, json};
use ws_proto::Message;
use ws_server::server::ServerConfig;
use ws_tests::proxy::CuttingProxy;
use ws_tests::{Rt, start_hub};

/// Headless Chromium and a DevTools connection to it.
struct Browser {
    child: Child,
    ws: runtime_tokio::WebSocket,
    next_id: u64,
    _profile: TempDir,
}

struct TempDir(std::path::PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Browser {
    async fn launch() -> Self {
        let profile = std::env::temp_dir().join(format!("ws-hub-chromium-{}", std::process::id()));
        let mut child = Command::new("chromium")
            .args([
                "--headless=new",
                "--no-sandbox",
                "--disable-gpu",
                "--no-first-run",
                "--remote-debugging-port=0",
                "--remote-debugging-address=127.0.0.1",
                // Every page is a background tab: keep its timers running.
                "--disable-background-timer-throttling",
                "--disable-renderer-backgrounding",
                "--disable-backgrounding-occluded-windows",
            ])
            .arg(format!("--user-data-dir={}", profile.display()))
            .arg("about:blank")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("chromium (scripts/install-deps.sh installs it)");
        let stderr = child.stderr.take().expect("stderr");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if let Some(url) = line.strip_prefix("DevTools listening on ") {
                    let _ = tx.send(url.trim().to_owned());
                }
            }
        });
        let url = rx
            .recv_timeout(Duration::from_secs(60))
            .expect("chromium's DevTools endpoint");
        let mut config = ws_async::WsConfig::default();
        config.proto.max_message_size = 64 << 20;
        let (ws, _) = runtime_tokio::connect(&url, config)
            .await
            .expect("DevTools connection");
        Self {
            child,
            ws,
            next_id: 0,
            _profile: TempDir(profile),
        }
    }

    /// One DevTools command; its `result`.
    async fn call(&mut self, session: Option<&str>, method: &str, params: Value) -> Value {
        self.next_id += 1;
        let id = self.next_id;
        let mut msg = json!({"id": id, "method": method, "params": params});
        if let Some(s) = session {
            msg["sessionId"] = json!(s);
        }
        self.ws
            .send(Message::text(msg.to_string()))
            .await
            .expect("send");
        loop {
            let m = tokio::time::timeout(Duration::from_secs(60), self.ws.recv())
                .await
                .expect("DevTools answer in time")
                .expect("recv")
                .expect("open");
            let Message::Text(t) = m else { continue };
            let v: Value = serde_json::from_str(t.as_str()).expect("json");
            if v["id"] == id {
                assert!(v.get("error").is_none(), "{method}: {v}");
                return v["result"].clone();
            }
        }
    }

    /// Opens `url` in a new page; returns its session.
    async fn open(&mut self, url: &str) -> String {
        let target = self
            .call(None, "Target.createTarget", json!({"url": url}))
            .await;
        let attached = self
            .call(
                None,
                "Target.attachToTarget",
                json!({"targetId": target["targetId"], "flatten": true}),
            )
            .await;
        attached["sessionId"].as_str().expect("session").to_owned()
    }

    /// Evaluates `js` in the page (awaiting a promise); its value.
    async fn eval(&mut self, session: &str, js: &str) -> Value {
        let r = self
            .call(
                Some(session),
                "Runtime.evaluate",
                json!({"expression": js, "awaitPromise": true, "returnByValue": true}),
            )
            .await;
        assert!(r.get("exceptionDetails").is_none(), "{js}: {r}");
        r["result"]["value"].clone()
    }

    /// Polls `js` until it is `true` (bounded); a throw (page still
    /// loading) counts as `false`.
    async fn until(&mut self, session: &str, js: &str) {
        let guarded =
            format!("(() => {{ try {{ return ({js}) === true; }} catch {{ return false; }} }})()");
        for _ in 0..1200 {
            if self.eval(session, &guarded).await == json!(true) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("never true: {js}");
    }
}

const CONNECTED: &str = "typeof hub === 'object' && hub.state === 'connected'";

#[test]
fn browser_pages_exactly_once_through_cuts_and_the_demo_dom() {
    const PER_PUBLISHER: u64 = 30;
    let server = start_hub(Rt::Tokio, ServerConfig::default());
    let proxy = CuttingProxy::start(server.addr, 11, Duration::from_millis(400));
    let page = format!("http://{}/client/demo.html", proxy.addr);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio");
    runtime.block_on(async {
        let mut b = Browser::launch().await;

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
