//! The browser client and its demo page, served by `serve` at fixed paths
//! (embedded at build time from `clients/js/`).

use ws_proto::HttpResponse;

/// Path of the browser client module.
pub const CLIENT_JS_PATH: &str = "/client/ws-hub-client.js";
/// Path of the demo page (it imports the module next to it).
pub const DEMO_PATH: &str = "/client/demo.html";

const CLIENT_JS: &str = include_str!("../../../clients/js/ws-hub-client.js");
const DEMO_HTML: &str = include_str!("../../../clients/js/demo.html");

/// The asset at `path`, if it is one.
pub(crate) fn asset(path: &str) -> Option<HttpResponse> {
    let (body, content_type) = match path {
        CLIENT_JS_PATH => (CLIENT_JS, "text/javascript; charset=utf-8"),
        DEMO_PATH => (DEMO_HTML, "text/html; charset=utf-8"),
        _ => return None,
    };
    let mut response = HttpResponse::text(200, body);
    response.content_type = content_type.into();
    Some(response)
}
