//! One request and its response: the body is read within the limits, the request becomes a Lua
//! table, the handler runs as a task of its own, and its answer, which the task leaves in the
//! exchange's reply slot ([`super::reply`]), becomes the response. A task that ends with no
//! answer there failed (its error is reported with its traceback, as any task's), was
//! cancelled or left the scheduler: the client gets `500`. So does a request whose task could
//! not start (the Lua out of memory, the scheduler refusing work), and that is reported to the
//! scheduler's error handler, naming the method and path.
//!
//! The handler's task is cancelled if the exchange is dropped before the task ends (the
//! connection closed, or the server's shutdown deadline passed), so no handler outlives its
//! client by more than its next yield.

use std::convert::Infallible;
use std::rc::Rc;

use http_body_util::{BodyExt, Full, LengthLimitError, Limited};
use hyper::body::{Body, Bytes, Incoming};
use hyper::header::{self, HeaderName, HeaderValue, CONTENT_LENGTH, TRANSFER_ENCODING};
use hyper::{HeaderMap, Method, Request, Response, StatusCode};
use mlua::{Lua, MultiValue, Table, Value};
use spindle::{TaskError, TaskId, TaskStatus, WeakScheduler};
use tokio::time::timeout_at;

use super::connection::InFlight;
use super::Shared;
use crate::websocket::accept::is_upgrade;

/// The handler's checked answer, as `respond` hands it from the task to the exchange.
pub(super) struct Answer {
    status: StatusCode,
    headers: HeaderMap,
    body: Bytes,
}

/// Answers one request.
pub(super) async fn exchange(
    shared: Rc<Shared>,
    in_flight: InFlight,
    request: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    if let Some(websocket) = &shared.websocket {
        if is_upgrade(&request) {
            return Ok(match shared.scheduler.upgrade() {
                Some(scheduler) => websocket.accept(&scheduler, request, || in_flight.take_slot()),
                None => plain(StatusCode::SERVICE_UNAVAILABLE),
            });
        }
    }
    let Some(task_function) = &shared.task_function else {
        return Ok(plain(StatusCode::UPGRADE_REQUIRED));
    };
    let deadline = in_flight.started() + shared.limits.request_timeout;
    let (parts, body) = request.into_parts();
    let limit = shared.limits.max_body_size;
    let declared = parts
        .headers
        .get(CONTENT_LENGTH)
        .and_then(|length| length.to_str().ok()?.parse::<u64>().ok());
    if declared.is_some_and(|length| length > limit as u64) {
        return Ok(plain(StatusCode::PAYLOAD_TOO_LARGE));
    }
    // A request without a body (the usual GET) needs neither the collector nor its timer.
    let body = match body.is_end_stream() {
        true => Bytes::new(),
        false => match timeout_at(deadline, Limited::new(body, limit).collect()).await {
            Ok(Ok(collected)) => collected.to_bytes(),
            Ok(Err(error)) if error.is::<LengthLimitError>() => {
                return Ok(plain(StatusCode::PAYLOAD_TOO_LARGE))
            }
            Ok(Err(_)) => return Ok(plain(StatusCode::BAD_REQUEST)),
            Err(_) => return Ok(plain(StatusCode::REQUEST_TIMEOUT)),
        },
    };
    let Some(scheduler) = shared.scheduler.upgrade() else {
        return Ok(plain(StatusCode::SERVICE_UNAVAILABLE));
    };
    let slot = shared.replies.open();
    let task = match request_args(scheduler.lua(), slot.key(), &parts, &body)
        .and_then(|args| Ok(scheduler.spawn_detached(task_function, args)?))
    {
        Ok(task) => task,
        // The Lua is out of memory, or the scheduler refuses work: no task holds the failure,
        // so it is reported here, as a task's error would be.
        Err(error) => {
            scheduler.report_error(TaskError::new(
                None,
                format!(
                    "net.serve: cannot start the handler for {} {}: {error}",
                    parts.method,
                    parts.uri.path()
                ),
                "",
            ));
            return Ok(plain(StatusCode::INTERNAL_SERVER_ERROR));
        }
    };
    // A handler that returned without yielding has answered already: no join, no timer.
    if let Some(answer) = slot.take() {
        return Ok(answer.into_response());
    }
    if scheduler.status(task) != TaskStatus::Scheduled {
        // Failed (the error handler has it), cancelled, or left the scheduler.
        return Ok(plain(StatusCode::INTERNAL_SERVER_ERROR));
    }
    let mut running = Running {
        scheduler: shared.scheduler.clone(),
        task: Some(task),
    };
    // The wait holds the scheduler weakly: with the strong handle let go before the await, a
    // host that drops its last handle mid-request ends the scheduler (and this exchange).
    let ended = scheduler.ended(task);
    drop(scheduler);
    let outcome = timeout_at(deadline, ended).await;
    running.task = None;
    let response = match outcome {
        Ok(()) => match slot.take() {
            Some(answer) => answer.into_response(),
            // Failed (the error handler has it), cancelled, or left the scheduler.
            None => plain(StatusCode::INTERNAL_SERVER_ERROR),
        },
        // The handler is too slow: its task is cancelled.
        Err(_) => {
            if let Some(scheduler) = shared.scheduler.upgrade() {
                let _ = scheduler.cancel(task);
            }
            plain(StatusCode::SERVICE_UNAVAILABLE)
        }
    };
    Ok(response)
}

impl Answer {
    fn into_response(self) -> Response<Full<Bytes>> {
        let mut response = Response::new(Full::new(self.body));
        *response.status_mut() = self.status;
        *response.headers_mut() = self.headers;
        response
    }
}

/// Cancels the handler's task if the exchange is dropped while it runs.
struct Running {
    scheduler: WeakScheduler,
    task: Option<TaskId>,
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            if let Some(scheduler) = self.scheduler.upgrade() {
                // Refused only if the task runs now or is gone already; either way it is not
                // waiting for this exchange any more.
                let _ = scheduler.cancel(task);
            }
        }
    }
}

/// A response with no body of its own but the status's reason.
fn plain(status: StatusCode) -> Response<Full<Bytes>> {
    let reason = status.canonical_reason().unwrap_or("");
    let mut response = Response::new(Full::new(Bytes::from_static(reason.as_bytes())));
    *response.status_mut() = status;
    response
}

/// Methods the task function gets as their index in this list (from 1), not as a string.
pub(super) static COMMON_METHODS: [Method; 7] = [
    Method::GET,
    Method::POST,
    Method::PUT,
    Method::DELETE,
    Method::PATCH,
    Method::HEAD,
    Method::OPTIONS,
];

/// Header names the task function gets as their index in this list (from 1), not as a string.
pub(super) static COMMON_NAMES: [HeaderName; 14] = [
    header::HOST,
    header::USER_AGENT,
    header::ACCEPT,
    header::ACCEPT_ENCODING,
    header::ACCEPT_LANGUAGE,
    header::CONNECTION,
    header::CONTENT_TYPE,
    header::CONTENT_LENGTH,
    header::COOKIE,
    header::AUTHORIZATION,
    header::CACHE_CONTROL,
    header::ORIGIN,
    header::REFERER,
    header::UPGRADE,
];

/// The request as `net.serve`'s task function takes it, to build the table the handler sees:
/// the reply slot's key ([`super::reply`]), `method, path, body, n`, then `n` decoded query
/// pairs (`a=1&b=x+y&a=2` as `a, 1, b, x y, a, 2`; `+` read as a space; a key without `=` has
/// the empty value), then the headers' names
/// (lower case) and values (a header sent more than once joined with `", "`). A method or
/// header name of [`COMMON_METHODS`] or [`COMMON_NAMES`] is passed as its index there, and an
/// empty body as nil.
pub(super) fn request_args(
    lua: &Lua,
    slot: i64,
    parts: &hyper::http::request::Parts,
    body: &Bytes,
) -> mlua::Result<MultiValue> {
    let query = parts.uri.query().unwrap_or("");
    let pairs = query.split('&').filter(|pair| !pair.is_empty());
    let mut args = Vec::with_capacity(5 + 2 * parts.headers.keys_len());
    args.push(Value::Integer(slot));
    args.push(
        match COMMON_METHODS.iter().position(|m| *m == parts.method) {
            Some(index) => Value::Integer(index as i64 + 1),
            None => Value::String(lua.create_string(parts.method.as_str())?),
        },
    );
    args.push(Value::String(lua.create_string(parts.uri.path())?));
    args.push(match body.is_empty() {
        true => Value::Nil,
        false => Value::String(lua.create_string(body)?),
    });
    args.push(Value::Integer(0));
    let mut count = 0;
    for pair in pairs {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        args.push(Value::String(lua.create_string(decode_component(key))?));
        args.push(Value::String(lua.create_string(decode_component(value))?));
        count += 1;
    }
    args[4] = Value::Integer(count);
    for name in parts.headers.keys() {
        args.push(
            match COMMON_NAMES.iter().position(|common| common == name) {
                Some(index) => Value::Integer(index as i64 + 1),
                None => Value::String(lua.create_string(name.as_str())?),
            },
        );
        let value = crate::headers::joined(&parts.headers, name);
        args.push(Value::String(lua.create_string(&*value)?));
    }
    Ok(MultiValue::from_vec(args))
}

fn decode_component(text: &str) -> Vec<u8> {
    let spaced = text.replace('+', " ");
    percent_encoding::percent_decode_str(&spaced).collect()
}

/// What `respond(slot, answer)`, called in the handler's task with what the handler returned,
/// leaves in the reply slot: the checked answer. A bad answer fails the task there, with a
/// message that says what was wrong.
pub(super) fn respond(value: Value) -> mlua::Result<Answer> {
    answer_from(value)
        .map_err(|message| mlua::Error::runtime(format!("net.serve: the handler {message}")))
}

fn answer_from(value: Value) -> Result<Answer, String> {
    match value {
        Value::String(body) => Ok(Answer {
            status: StatusCode::OK,
            headers: HeaderMap::new(),
            body: Bytes::copy_from_slice(&body.as_bytes()),
        }),
        Value::Table(table) => {
            let status = match table
                .raw_get::<Value>("status")
                .map_err(|e| e.to_string())?
            {
                Value::Nil => StatusCode::OK,
                Value::Integer(code) => status_from(code as f64)?,
                Value::Number(code) => status_from(code)?,
                other => {
                    return Err(format!(
                        "returned a status that is a {}, not a number",
                        crate::type_name(&other)
                    ))
                }
            };
            let body = match table.raw_get::<Value>("body").map_err(|e| e.to_string())? {
                Value::Nil => Bytes::new(),
                Value::String(body) => Bytes::copy_from_slice(&body.as_bytes()),
                Value::Buffer(buffer) => Bytes::from(buffer.to_vec()),
                other => {
                    return Err(format!(
                        "returned a body that is a {}, not a string or a buffer",
                        crate::type_name(&other)
                    ))
                }
            };
            let headers = match table
                .raw_get::<Value>("headers")
                .map_err(|e| e.to_string())?
            {
                Value::Nil => HeaderMap::new(),
                Value::Table(headers) => headers_from(headers)?,
                other => {
                    return Err(format!(
                        "returned headers that are a {}, not a table",
                        crate::type_name(&other)
                    ))
                }
            };
            check_framing(&headers, &body)?;
            Ok(Answer {
                status,
                headers,
                body,
            })
        }
        other => Err(format!(
            "returned a {}; expected a string (the body) or a table {{ status, headers, body }}",
            crate::type_name(&other)
        )),
    }
}

/// hyper frames the body from its length; a `content-length` that says otherwise would have it
/// send a response that the client reads wrong (and panic, in a debug build). An empty body may
/// come with any length: the answer to a `HEAD` gives the length a `GET` would get.
fn check_framing(headers: &HeaderMap, body: &Bytes) -> Result<(), String> {
    let mut declared = None;
    for value in headers.get_all(CONTENT_LENGTH) {
        let text = String::from_utf8_lossy(value.as_bytes());
        let Ok(length) = text.trim().parse::<u64>() else {
            return Err(format!("returned an invalid content-length \"{text}\""));
        };
        if declared.is_some_and(|first| first != length) {
            return Err("returned two different content-length values".into());
        }
        if !body.is_empty() && length != body.len() as u64 {
            return Err(format!(
                "returned content-length {length} for a body of {} bytes (leave it out: the server sets it)",
                body.len()
            ));
        }
        declared = Some(length);
    }
    if declared.is_some() && headers.contains_key(TRANSFER_ENCODING) {
        return Err("returned both content-length and transfer-encoding".into());
    }
    Ok(())
}

fn status_from(code: f64) -> Result<StatusCode, String> {
    // A 1xx is no final answer: hyper would send a 500 instead (or, for a 101, hand the
    // connection over to an upgrade nobody waits for).
    if code.fract() == 0.0 && (200.0..=599.0).contains(&code) {
        StatusCode::from_u16(code as u16).map_err(|e| e.to_string())
    } else {
        Err(format!(
            "returned status {code}; expected an integer from 200 to 599"
        ))
    }
}

fn headers_from(table: Table) -> Result<HeaderMap, String> {
    let mut headers = HeaderMap::new();
    for pair in table.pairs::<Value, Value>() {
        let (name, value) = pair.map_err(|e| e.to_string())?;
        let Value::String(name) = name else {
            return Err(format!(
                "returned a header name that is a {}",
                crate::type_name(&name)
            ));
        };
        let name_text = name.to_string_lossy();
        let header = HeaderName::from_bytes(&name.as_bytes())
            .map_err(|_| format!("returned an invalid header name \"{name_text}\""))?;
        let mut add = |value: &Value| -> Result<(), String> {
            let bytes = match value {
                Value::String(text) => text.as_bytes().to_vec(),
                Value::Integer(n) => n.to_string().into_bytes(),
                Value::Number(n) => n.to_string().into_bytes(),
                other => {
                    return Err(format!(
                        "returned header \"{name_text}\" as a {}, not a string",
                        crate::type_name(other)
                    ))
                }
            };
            let value = HeaderValue::from_bytes(&bytes)
                .map_err(|_| format!("returned an invalid value for header \"{name_text}\""))?;
            headers.append(header.clone(), value);
            Ok(())
        };
        match &value {
            Value::Table(values) => {
                for value in values.sequence_values::<Value>() {
                    add(&value.map_err(|e| e.to_string())?)?;
                }
            }
            single => add(single)?,
        }
    }
    Ok(headers)
}
