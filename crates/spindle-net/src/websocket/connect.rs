//! `net.socket(url, options?)`: a WebSocket client. Connects over TCP, performs the opening
//! handshake, and returns the socket; the whole is bounded by the `timeout` option. Errors show
//! the URL without its user information and query, as `net.request`'s do. `wss://`
//! runs over TLS (rustls, with the ring provider), trusting the webpki roots (Mozilla's list,
//! built in) and the `caCertificates` option's: a server whose certificate does not chain to one
//! of them is refused.

use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use mlua::{Function, Lua, LuaString, Table, Value};
use rustls::pki_types::ServerName;
use rustls::ClientConfig;
use spindle::Scheduler;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::handshake::client::Request;
use tokio_tungstenite::tungstenite::Error as WsError;

use super::{config, refused, socket_userdata, Io, Ws, DEFAULT_MAX_MESSAGE_SIZE};
use crate::config::{read_options, seconds_from, size_from};
use crate::tls::{self, ExtraRoots};

/// Where to connect, and how.
struct Target {
    /// The opening handshake's request, for the URL given.
    request: Request,
    /// The URL as errors show it: without user information or query (`crate::url::shown`).
    shown: String,
    max_message_size: usize,
    timeout: Duration,
    /// For `wss://`: the default configuration, or one that trusts extra roots too.
    tls: Arc<ClientConfig>,
}

/// The primitive behind `net.socket`: `(url, options?)` to `(true, socket)` or `(false, why)`.
pub(super) fn function(scheduler: &Scheduler) -> mlua::Result<Function> {
    let configs: Rc<tls::Cache<Arc<ClientConfig>>> = Rc::default();
    Ok(scheduler.create_async_function(
        move |lua: Lua, (url, options): (LuaString, Option<Table>)| {
            let target = target(&url, options, &configs);
            async move {
                let target = match target {
                    Ok(target) => target,
                    Err(message) => return refused(&lua, message),
                };
                let (seconds, limit) = (target.timeout.as_secs_f64(), target.timeout);
                let shown = target.shown.clone();
                match tokio::time::timeout(limit, open(target)).await {
                    Ok(Ok(stream)) => Ok((
                        true,
                        Value::UserData(socket_userdata(&lua, stream)?),
                        Value::Nil,
                    )),
                    Ok(Err(message)) => refused(&lua, message),
                    Err(_) => refused(
                        &lua,
                        format!("cannot connect to {shown}: timed out after {seconds} s"),
                    ),
                }
            }
        },
    )?)
}

/// Reads `net.socket`'s options; extra roots are checked and turned into a configuration (or
/// found in `configs`) here, before anything connects, for `ws://` URLs too.
fn target(
    url: &LuaString,
    options: Option<Table>,
    configs: &tls::Cache<Arc<ClientConfig>>,
) -> Result<Target, String> {
    let url = url.to_string_lossy();
    let request = url
        .as_str()
        .into_client_request()
        .map_err(|e| format!("invalid URL \"{url}\": {e}"))?;
    let uri = request.uri();
    if !matches!(uri.scheme_str(), Some("ws" | "wss")) {
        return Err(format!("invalid URL \"{url}\": expected ws:// or wss://"));
    }
    if let Some(port) = crate::url::bad_port(uri) {
        return Err(format!(
            "invalid URL \"{url}\": port {port} is not from 0 to 65535"
        ));
    }
    let shown = crate::url::shown(uri);
    let mut target = Target {
        request,
        shown,
        max_message_size: DEFAULT_MAX_MESSAGE_SIZE,
        timeout: Duration::from_secs(30),
        tls: tls::default_config(),
    };
    let mut extra_roots = None;
    read_options(
        options,
        &["maxMessageSize", "timeout", tls::OPTION],
        |name, value| {
            match name {
                "maxMessageSize" => target.max_message_size = size_from(value)?,
                "timeout" => target.timeout = seconds_from(value)?,
                _ => extra_roots = ExtraRoots::from_value(value)?,
            }
            Ok(())
        },
    )?;
    if let Some(roots) = extra_roots {
        target.tls = configs
            .get(&roots, Arc::new)
            .map_err(|message| format!("option '{}' {message}", tls::OPTION))?;
    }
    Ok(target)
}

async fn open(target: Target) -> Result<Ws, String> {
    let Target {
        request,
        shown: url,
        max_message_size,
        ..
    } = target;
    let uri = request.uri();
    let secure = uri.scheme_str() == Some("wss");
    let host = uri.host().unwrap_or_default();
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host)
        .to_string();
    let port = uri.port_u16().unwrap_or(if secure { 443 } else { 80 });
    let stream = TcpStream::connect((host.as_str(), port))
        .await
        .map_err(|e| format!("cannot connect to {url}: {e}"))?;
    let _ = stream.set_nodelay(true);
    let stream: Box<dyn Io> = if secure {
        let name = ServerName::try_from(host.clone())
            .map_err(|_| format!("invalid URL \"{url}\": \"{host}\" is not a server name"))?;
        let tls = TlsConnector::from(Arc::clone(&target.tls))
            .connect(name, stream)
            .await
            .map_err(|e| format!("the TLS handshake with {url} failed: {e}"))?;
        Box::new(tls)
    } else {
        Box::new(stream)
    };
    let config = config(max_message_size);
    match tokio_tungstenite::client_async_with_config(request, stream, Some(config)).await {
        Ok((socket, _response)) => Ok(socket),
        Err(WsError::Http(response)) => Err(format!(
            "{url} refused the WebSocket handshake: HTTP {}",
            response.status()
        )),
        Err(error) => Err(format!(
            "the WebSocket handshake with {url} failed: {error}"
        )),
    }
}
