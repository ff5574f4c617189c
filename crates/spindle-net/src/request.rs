//! `net.request`: an HTTP/1.1 client for scripts, as a Spindle async function.
//!
//! The calling task waits while the others go on; cancelling it (or ending the run) drops the
//! request's future at once, which closes its connection if the exchange was under way. A
//! module's requests share one pooled client (hyper-util's), so a script calling the same server
//! again reuses an idle keep-alive connection; HTTPS goes through rustls with the webpki roots.
//! Requests with `caCertificates` (extra roots) get a pooled client of their own per root set
//! (see `tls`), which leaves the shared one, and its trust, as they are.
//!
//! What raises and what returns: every answer from the server is returned, `ok` telling a 2xx
//! from the rest (a 404 or a 500 is no error, as in Lune); everything that gets no answer
//! raises, naming the method and the URL: a bad argument, a refused connection, a name that
//! does not resolve, a TLS failure, the timeout, a connection closed mid-exchange, too many
//! redirects, and a body past `maxBodySize` or past what the Lua memory limit leaves room for.
//! The URL in an error is given without its user information and its query, which may carry
//! secrets.

mod encoding;
mod options;
mod redirect;

use std::cell::OnceCell;
use std::rc::Rc;
use std::time::Duration;

use http_body_util::{BodyExt, Full, LengthLimitError, Limited};
use hyper::body::{Bytes, Incoming};
use hyper::header::{
    HeaderValue, ACCEPT_ENCODING, CONTENT_ENCODING, CONTENT_LENGTH, LOCATION, USER_AGENT,
};
use hyper::{Request, Response};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use mlua::{Function, Lua, Table, Value};
use spindle::Scheduler;
use tokio::time::{timeout_at, Instant};

use encoding::Undecodable;
use options::Options;

use crate::tls;

/// The pooled client a module's requests share.
type HttpClient = Client<HttpsConnector<HttpConnector>, Full<Bytes>>;

/// The `User-Agent` sent unless the script sets its own.
const AGENT: &str = concat!("spindle/", env!("CARGO_PKG_VERSION"));

/// How long an idle pooled connection is kept for reuse.
const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(30);

/// The Lua side: the primitive answers `true, response` or `false, message`, and the message is
/// raised at the line that called `net.request`; so is the refusal to wait where the caller
/// cannot yield (a host's main chunk, a metamethod), which the scheduler would raise here.
/// `error` and `isyieldable` are bound when the module is made, so that a script that replaces
/// them later does not turn a failed request into a return.
const WRAPPER: &str = r#"
local send = ...
local error, isyieldable = error, coroutine.isyieldable
return function(config)
    if not isyieldable() then
        error("net.request: cannot wait for a response here: call it from a task", 2)
    end
    local ok, result = send(config)
    if ok then
        return result
    end
    error(result, 2)
end
"#;

/// The function `net.request`, with its own pooled clients, made at the first request.
pub(crate) fn function(scheduler: &Scheduler) -> mlua::Result<Function> {
    let clients: Rc<Clients> = Rc::default();
    let send = scheduler.create_async_function(move |lua: Lua, arg: Value| {
        let prepared =
            Options::from_arg(arg).and_then(|options| Ok((clients.client_for(&options)?, options)));
        async move {
            let outcome = match prepared {
                Ok((http, options)) => perform(&lua, &http, options).await,
                Err(message) => Err(message),
            };
            match outcome {
                Ok(response) => Ok((true, Value::Table(response_table(&lua, response)?))),
                Err(message) => Ok((false, Value::String(lua.create_string(message)?))),
            }
        }
    })?;
    scheduler
        .lua()
        .load(WRAPPER)
        .set_name("=net.request")
        .into_function()?
        .call(send)
}

/// A module's clients: the pooled one every request without `caCertificates` shares, and one
/// per set of extra roots used lately, each with its own pool: a loop of requests with the same
/// roots reuses its connections, and a connection verified against extra roots is never handed
/// to a request that did not give them.
#[derive(Default)]
struct Clients {
    pooled: OnceCell<HttpClient>,
    with_extra_roots: tls::Cache<HttpClient>,
}

impl Clients {
    /// The client for `options`, built at its first use.
    fn client_for(&self, options: &Options) -> Result<HttpClient, String> {
        if tokio::runtime::Handle::try_current().is_err() {
            return Err(
                "net.request: no tokio runtime: drive the scheduler inside one (see spindle-net's docs)"
                    .into(),
            );
        }
        match &options.ca_certificates {
            None => Ok(self
                .pooled
                .get_or_init(|| new_client((*tls::default_config()).clone()))
                .clone()),
            Some(roots) => self
                .with_extra_roots
                .get(roots, new_client)
                .map_err(|message| format!("net.request: option '{}' {message}", tls::OPTION)),
        }
    }
}

/// A pooled client whose HTTPS connections use `tls`.
fn new_client(tls: rustls::ClientConfig) -> HttpClient {
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_nodelay(true);
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_http1()
        .wrap_connector(http);
    Client::builder(TokioExecutor::new())
        .pool_timer(TokioTimer::new())
        .pool_idle_timeout(POOL_IDLE_TIMEOUT)
        .build(https)
}

/// The final response: its head and its whole body.
struct Answer {
    parts: hyper::http::response::Parts,
    body: Bytes,
}

/// What the last response's body is read under.
struct BodyRules {
    max_body_size: usize,
    decompress: bool,
    timeout: Duration,
    deadline: Instant,
}

/// Sends the request, follows its redirects and reads the last body, all within the timeout.
async fn perform(lua: &Lua, http: &HttpClient, options: Options) -> Result<Answer, String> {
    let Options {
        mut url,
        mut method,
        mut headers,
        mut body,
        timeout,
        max_redirects,
        max_body_size,
        decompress,
        ca_certificates: _,
    } = options;
    let rules = BodyRules {
        max_body_size,
        decompress,
        timeout,
        deadline: Instant::now() + timeout,
    };
    if !headers.contains_key(USER_AGENT) {
        headers.insert(USER_AGENT, HeaderValue::from_static(AGENT));
    }
    if decompress && !headers.contains_key(ACCEPT_ENCODING) {
        headers.insert(
            ACCEPT_ENCODING,
            HeaderValue::from_static(encoding::ACCEPTED),
        );
    }
    let mut redirects = 0u32;
    loop {
        let place = format!("{method} {}", crate::url::shown(&url));
        let mut request = Request::new(Full::new(body.clone()));
        *request.method_mut() = method.clone();
        *request.uri_mut() = url.clone();
        *request.headers_mut() = headers.clone();
        let sent = timeout_at(rules.deadline, http.request(request)).await;
        let response = match sent {
            Err(_) => return Err(timed_out(&place, timeout)),
            Ok(Err(error)) => return Err(failed(&place, &error)),
            Ok(Ok(response)) => response,
        };
        let status = response.status();
        let location = response.headers().get(LOCATION).cloned();
        match (max_redirects, location) {
            (Some(max), Some(location)) if redirect::is_redirect(status) => {
                if redirects == max {
                    return Err(format!(
                        "net.request: {place}: too many redirects (more than {max})"
                    ));
                }
                redirects += 1;
                let location = String::from_utf8_lossy(location.as_bytes()).into_owned();
                let next = redirect::follow(status, &location, &url, &method, headers, body)
                    .map_err(|why| format!("net.request: {place}: {why}"))?;
                // Read the small body of the redirect, so that its connection may be reused.
                let _ = timeout_at(
                    rules.deadline,
                    Limited::new(response.into_body(), 64 * 1024).collect(),
                )
                .await;
                (url, method, headers, body) = (next.url, next.method, next.headers, next.body);
            }
            _ => return read_body(lua, &place, response, &rules).await,
        }
    }
}

/// Reads `response`'s body up to the cap: `maxBodySize`, or less if the Lua memory limit leaves
/// less room than that; the cap holds for the decoded body too.
async fn read_body(
    lua: &Lua,
    place: &str,
    response: Response<Incoming>,
    rules: &BodyRules,
) -> Result<Answer, String> {
    let room = memory_room(lua);
    let (cap, what) = match room {
        Some(room) if room < rules.max_body_size => {
            (room, "what the Lua memory limit leaves room for")
        }
        _ => (rules.max_body_size, "maxBodySize"),
    };
    let too_large =
        || format!("net.request: {place}: the response body is larger than {what} ({cap} bytes)");
    let (mut parts, body) = response.into_parts();
    let declared = parts
        .headers
        .get(CONTENT_LENGTH)
        .and_then(|length| length.to_str().ok()?.parse::<u64>().ok());
    if declared.is_some_and(|length| length > cap as u64) {
        return Err(too_large());
    }
    let body = match timeout_at(rules.deadline, Limited::new(body, cap).collect()).await {
        Err(_) => return Err(timed_out(place, rules.timeout)),
        Ok(Err(error)) if error.is::<LengthLimitError>() => return Err(too_large()),
        Ok(Err(error)) => {
            return Err(format!(
                "net.request: {place}: the body broke off: {}",
                chain(&*error)
            ))
        }
        Ok(Ok(collected)) => collected.to_bytes(),
    };
    let coding = encoding::coding(&parts.headers).filter(|_| rules.decompress);
    let Some(coding) = coding else {
        return Ok(Answer { parts, body });
    };
    match encoding::decode(coding, &body, cap) {
        Ok(decoded) => {
            // The headers describe the body the script gets.
            parts.headers.remove(CONTENT_ENCODING);
            parts.headers.remove(CONTENT_LENGTH);
            Ok(Answer {
                parts,
                body: Bytes::from(decoded),
            })
        }
        Err(Undecodable::TooLarge) => Err(format!("{} once decompressed", too_large())),
        Err(Undecodable::Corrupt(why)) => Err(format!(
            "net.request: {place}: the body is not valid {} data: {why} \
             (pass options = {{ decompress = false }} for the bytes as sent)",
            coding.name()
        )),
    }
}

/// The bytes the Lua may still allocate under its memory limit; `None` without a limit.
fn memory_room(lua: &Lua) -> Option<usize> {
    // mlua has no getter for the limit: setting one returns the one it replaces.
    let limit = lua.set_memory_limit(0).ok()?;
    let _ = lua.set_memory_limit(limit);
    (limit > 0).then(|| limit.saturating_sub(lua.used_memory()))
}

/// `{ ok, statusCode, statusMessage, headers, body }`.
fn response_table(lua: &Lua, answer: Answer) -> mlua::Result<Table> {
    let status = answer.parts.status;
    let message = match answer.parts.extensions.get::<hyper::ext::ReasonPhrase>() {
        Some(reason) => reason.as_bytes(),
        None => status.canonical_reason().unwrap_or("").as_bytes(),
    };
    let response = lua.create_table_with_capacity(0, 5)?;
    response.raw_set("ok", status.is_success())?;
    response.raw_set("statusCode", status.as_u16())?;
    response.raw_set("statusMessage", lua.create_string(message)?)?;
    response.raw_set(
        "headers",
        crate::headers::to_table(lua, &answer.parts.headers)?,
    )?;
    response.raw_set("body", lua.create_string(&answer.body)?)?;
    Ok(response)
}

fn timed_out(place: &str, timeout: Duration) -> String {
    format!(
        "net.request: {place}: timed out after {} s",
        timeout.as_secs_f64()
    )
}

/// A request that got no response: the connection could not be made (refused, no such host,
/// TLS), or it broke before the response came.
fn failed(place: &str, error: &hyper_util::client::legacy::Error) -> String {
    use std::error::Error;
    let what = if error.is_connect() {
        "cannot connect"
    } else {
        "no response"
    };
    match error.source() {
        Some(source) => format!("net.request: {place}: {what}: {}", chain(source)),
        None => format!("net.request: {place}: {what}: {error}"),
    }
}

/// An error and its causes, as `outer: inner: innermost`.
fn chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut cause = error.source();
    while let Some(inner) = cause {
        let more = inner.to_string();
        if !text.contains(&more) {
            text.push_str(": ");
            text.push_str(&more);
        }
        cause = inner.source();
    }
    text
}
