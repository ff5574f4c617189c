//! `hyper-hello PORT [hello|yield|json]`: the raw-hyper baseline of the network benchmark. A
//! hyper 1.x HTTP/1.1 server on a current-thread tokio runtime that answers every request as
//! the workload's script does under `spindle run` (`scripts/net_WORKLOAD.luau`), with hyper's
//! own headers, until it is killed:
//!
//! - `hello` (the default): the body `hello, world`;
//! - `yield`: the same, after one cooperative yield to the runtime (`yield_now`), as the
//!   script's handler waits once with `task.wait()`;
//! - `json`: decodes the request's JSON body and answers with a small JSON object made from it.

use std::convert::Infallible;

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use spindle_bench::net::{json_reply, NetWorkload, HELLO_BODY};

fn main() -> std::io::Result<()> {
    let mut args = std::env::args().skip(1);
    let port: u16 = args
        .next()
        .and_then(|p| p.parse().ok())
        .expect("usage: hyper-hello PORT [hello|yield|json]");
    let workload = args
        .next()
        .map(|name| NetWorkload::from_name(&name).expect("workload: hello, yield or json"))
        .unwrap_or(NetWorkload::Hello);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
        loop {
            let (stream, _) = listener.accept().await?;
            let _ = stream.set_nodelay(true);
            tokio::spawn(async move {
                let service = service_fn(move |request| answer(workload, request));
                let _ = http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    })
}

async fn answer(
    workload: NetWorkload,
    request: Request<hyper::body::Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let body = match workload {
        NetWorkload::Hello => Bytes::from_static(HELLO_BODY.as_bytes()),
        NetWorkload::Yield => {
            tokio::task::yield_now().await;
            Bytes::from_static(HELLO_BODY.as_bytes())
        }
        NetWorkload::Json => {
            let body = match request.into_body().collect().await {
                Ok(body) => body.to_bytes(),
                Err(_) => Bytes::new(),
            };
            let reply = serde_json::from_slice::<serde_json::Value>(&body)
                .map(|value| json_reply(&value).to_string())
                .unwrap_or_else(|e| format!("bad json: {e}"));
            Bytes::from(reply)
        }
    };
    Ok(Response::new(Full::new(body)))
}
