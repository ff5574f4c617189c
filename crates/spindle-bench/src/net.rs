//! The network benchmark: wrk (`-t1 -c64`, loopback) against a server per workload, each server
//! in the same round as its baselines: `spindle run scripts/net_WORKLOAD.luau`, the raw-hyper
//! binary `hyper-hello PORT WORKLOAD`, and Lune 0.11 (`scripts/net_WORKLOAD.lune.luau`) when
//! `lune` is on `PATH`. The servers run on one CPU and wrk on the other when `taskset` is there.
//!
//! Invariant: a run with a socket error or a non-2xx response is no measurement.

use crate::error::{Error, Result};

/// The body every hello server answers with.
pub const HELLO_BODY: &str = "hello, world";

/// The request body of the `json` workload, which wrk posts.
pub const JSON_REQUEST: &str =
    r#"{"name":"spindle","items":[1,2,3,4,5],"nested":{"ok":true,"ratio":0.5}}"#;

/// What each server does with a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NetWorkload {
    /// Answers a constant string.
    Hello,
    /// Yields once to its scheduler (`task.wait()`; tokio's `yield_now` for raw hyper), then
    /// answers the constant string.
    Yield,
    /// Decodes [`JSON_REQUEST`] from the request's body and answers [`json_reply`] of it.
    Json,
}

impl NetWorkload {
    /// Every workload, in the order the benchmark runs them.
    pub const ALL: [NetWorkload; 3] = [NetWorkload::Hello, NetWorkload::Yield, NetWorkload::Json];

    /// The workload's name, as the scripts' file names and `--workload` spell it.
    pub fn name(self) -> &'static str {
        match self {
            NetWorkload::Hello => "hello",
            NetWorkload::Yield => "yield",
            NetWorkload::Json => "json",
        }
    }

    /// The workload named `name`.
    pub fn from_name(name: &str) -> Option<NetWorkload> {
        NetWorkload::ALL.into_iter().find(|w| w.name() == name)
    }
}

/// The `json` workload's answer to a decoded request: `{"hello": name, "count": #items, "ok":
/// nested.ok}`, which the scripts build the same way.
pub fn json_reply(request: &serde_json::Value) -> serde_json::Value {
    serde_json::json!({
        "hello": request["name"],
        "count": request["items"].as_array().map_or(0, Vec::len),
        "ok": request["nested"]["ok"],
    })
}

/// What one wrk run reported.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct WrkRun {
    /// Requests per second over the run.
    pub requests_per_second: f64,
    /// Requests completed.
    pub requests: u64,
}

/// Reads wrk's report; refuses one with socket errors or non-2xx/3xx responses.
pub fn parse_wrk(output: &str) -> Result<WrkRun> {
    let fail = |why: &str| Error::new(format!("{why} in wrk's report:\n{output}"));
    if output.contains("Socket errors:") {
        return Err(fail("socket errors"));
    }
    if output.contains("Non-2xx or 3xx responses:") {
        return Err(fail("non-2xx responses"));
    }
    let requests_per_second = output
        .lines()
        .find_map(|line| line.trim().strip_prefix("Requests/sec:"))
        .and_then(|value| value.trim().parse().ok())
        .ok_or_else(|| fail("no Requests/sec"))?;
    let requests = output
        .lines()
        .find_map(|line| {
            let (count, rest) = line.trim().split_once(' ')?;
            rest.starts_with("requests in")
                .then(|| count.parse().ok())?
        })
        .ok_or_else(|| fail("no request count"))?;
    if requests == 0 {
        return Err(fail("no requests"));
    }
    Ok(WrkRun {
        requests_per_second,
        requests,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_json_reply_reads_the_request_s_fields() {
        let request: serde_json::Value = serde_json::from_str(JSON_REQUEST).unwrap();
        assert_eq!(
            json_reply(&request),
            serde_json::json!({ "hello": "spindle", "count": 5, "ok": true })
        );
    }

    #[test]
    fn workloads_are_found_by_name() {
        for workload in NetWorkload::ALL {
            assert_eq!(NetWorkload::from_name(workload.name()), Some(workload));
        }
        assert_eq!(NetWorkload::from_name("hullo"), None);
    }

    const CLEAN: &str = "Running 5s test @ http://127.0.0.1:8080/
  1 threads and 64 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency   301.14us   40.12us   2.10ms   90.00%
    Req/Sec   210.00k     5.00k  220.00k    70.00%
  1050000 requests in 5.00s, 120.00MB read
Requests/sec: 210000.00
Transfer/sec:     24.00MB
";

    #[test]
    fn a_clean_report_gives_its_rate_and_count() {
        let run = parse_wrk(CLEAN).unwrap();
        assert_eq!(run.requests_per_second, 210000.0);
        assert_eq!(run.requests, 1_050_000);
    }

    #[test]
    fn a_report_with_errors_is_no_measurement() {
        let errors = CLEAN.replace(
            "Requests/sec",
            "  Socket errors: connect 0, read 3, write 0, timeout 0\nRequests/sec",
        );
        assert!(parse_wrk(&errors).is_err());
        let non_2xx = CLEAN.replace(
            "Requests/sec",
            "  Non-2xx or 3xx responses: 7\nRequests/sec",
        );
        assert!(parse_wrk(&non_2xx).is_err());
    }
}
