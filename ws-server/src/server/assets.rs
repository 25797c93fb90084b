//! The browser client and its demo page, served by `serve` at fixed paths
//! (embedded at build time from `clients/js/`).

use ws_proto::HttpResponse;

/// Path of the browser client module.
pub const CLIENT_JS_PATH: &str = "/client/ws-hub-client.js";
/// Path of the demo page (it imports the module next to it).
pub const DEMO_PATH: &str = "/client/demo.html";

const CLIENT_JS: &str = include_str!("../../../clients/js/ws-hub-client.js");
const DEMO_HTML: &str = include_str!("../../../clients/js/demo.html");

/// One of the files `serve` serves over plain HTTP.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Asset {
    /// The browser client module.
    ClientJs,
    /// The demo page.
    DemoHtml,
}

impl Asset {
    /// The asset at `path`, if it is one.
    pub(crate) fn at(path: &str) -> Option<Self> {
        match path {
            CLIENT_JS_PATH => Some(Self::ClientJs),
            DEMO_PATH => Some(Self::DemoHtml),
            _ => None,
        }
    }

    /// Its 200 answer.
    pub(crate) fn response(self) -> HttpResponse {
        let (body, content_type) = match self {
            Self::ClientJs => (CLIENT_JS, "text/javascript; charset=utf-8"),
            Self::DemoHtml => (DEMO_HTML, "text/html; charset=utf-8"),
        };
        let mut response = HttpResponse::text(200, body);
        response.content_type = content_type.into();
        response
    }
}
