//! Headless Chromium driven over the DevTools protocol with the project's
//! own WebSocket client: launch it, open pages, evaluate JavaScript in
//! them. Needs `chromium` (scripts/install-deps.sh installs it).

use std::io::{BufRead as _, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use serde_json::{Value, json};
use ws_proto::Message;

/// Headless Chromium and a DevTools connection to it; killed on drop.
pub struct Browser {
    child: Child,
    ws: runtime_tokio::WebSocket,
    next_id: u64,
    _profile: TempDir,
}

/// A profile directory, removed on drop.
struct TempDir(PathBuf);

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
    /// Launches headless Chromium on a fresh profile, with `extra` flags,
    /// and connects to its DevTools endpoint (on a tokio runtime).
    pub async fn launch(extra: &[String]) -> Self {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let profile = std::env::temp_dir().join(format!(
            "ws-hub-chromium-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
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
            .args(extra)
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
    pub async fn call(&mut self, session: Option<&str>, method: &str, params: Value) -> Value {
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
    pub async fn open(&mut self, url: &str) -> String {
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

    /// Evaluates `js` in the page (awaiting a promise); its value. A throw
    /// or a rejected promise fails the test.
    pub async fn eval(&mut self, session: &str, js: &str) -> Value {
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
    pub async fn until(&mut self, session: &str, js: &str) {
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

/// Runs `body` on a current-thread tokio runtime (the DevTools client's).
pub fn block_on<F: Future>(body: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio")
        .block_on(body)
}
