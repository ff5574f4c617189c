//! Following a redirect: where the `Location` header points, and what of the request goes there.
//!
//! As browsers and most clients do: `303 See Other`, and `301`/`302` after a `POST`, go on as a
//! `GET` with no body (a `HEAD` stays a `HEAD`); `307` and `308` repeat the method and the body.
//! Credentials (`Authorization`, `Cookie`, `Proxy-Authorization`) and an explicit `Host` are not
//! sent to another origin than the one they were given for.

use hyper::body::Bytes;
use hyper::header::{
    AUTHORIZATION, CONTENT_ENCODING, CONTENT_LENGTH, CONTENT_TYPE, COOKIE, HOST,
    PROXY_AUTHORIZATION, TRANSFER_ENCODING,
};
use hyper::{HeaderMap, Method, StatusCode, Uri};

/// Whether `status` sends the client elsewhere (with a `Location`).
pub(super) fn is_redirect(status: StatusCode) -> bool {
    matches!(status.as_u16(), 301 | 302 | 303 | 307 | 308)
}

/// The request to make next, once `status` sent the client from `from` to `location`.
pub(super) struct Next {
    pub(super) url: Uri,
    pub(super) method: Method,
    pub(super) headers: HeaderMap,
    pub(super) body: Bytes,
}

/// The request after the redirect, or why the `Location` cannot be followed.
pub(super) fn follow(
    status: StatusCode,
    location: &str,
    from: &Uri,
    method: &Method,
    mut headers: HeaderMap,
    body: Bytes,
) -> Result<Next, String> {
    let url = resolve(from, location)?;
    let (method, body) = match status.as_u16() {
        303 if *method != Method::HEAD => (Method::GET, Bytes::new()),
        301 | 302 if *method == Method::POST => (Method::GET, Bytes::new()),
        _ => (method.clone(), body),
    };
    if body.is_empty() {
        for name in [
            CONTENT_LENGTH,
            CONTENT_TYPE,
            CONTENT_ENCODING,
            TRANSFER_ENCODING,
        ] {
            headers.remove(name);
        }
    }
    if url.scheme() != from.scheme() || url.authority() != from.authority() {
        for name in [AUTHORIZATION, COOKIE, PROXY_AUTHORIZATION, HOST] {
            headers.remove(name);
        }
    }
    Ok(Next {
        url,
        method,
        headers,
        body,
    })
}

/// `location` read against `base`: an absolute URL, `//host/path` (the base's scheme), `/path`
/// (the base's origin), `?query`, or a path relative to the base's directory. Dot segments are
/// sent as they are, for the server to read.
fn resolve(base: &Uri, location: &str) -> Result<Uri, String> {
    let location = location.trim();
    let bad = |why: &str| format!("cannot follow the redirect to \"{location}\" ({why})");
    let scheme = base.scheme_str().unwrap_or("http");
    let authority = base.authority().map(|a| a.as_str()).unwrap_or("");
    let absolute = if location.contains("://") {
        location.to_string()
    } else if let Some(rest) = location.strip_prefix("//") {
        format!("{scheme}://{rest}")
    } else if location.starts_with('/') {
        format!("{scheme}://{authority}{location}")
    } else if location.starts_with('?') {
        format!("{scheme}://{authority}{}{location}", base.path())
    } else {
        let path = base.path();
        let directory = &path[..path.rfind('/').map_or(0, |at| at + 1)];
        let directory = if directory.is_empty() { "/" } else { directory };
        format!("{scheme}://{authority}{directory}{location}")
    };
    // A fragment is for the client's eyes only: it is not sent.
    let absolute = absolute.split('#').next().unwrap_or_default();
    let url: Uri = absolute.parse().map_err(|e| bad(&format!("{e}")))?;
    if let Some(port) = crate::url::bad_port(&url) {
        return Err(bad(&format!("port {port} is not from 0 to 65535")));
    }
    match url.scheme_str() {
        Some("http" | "https") if url.host().is_some_and(|h| !h.is_empty()) => Ok(url),
        _ => Err(bad("not an http or https URL")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resolved(base: &str, location: &str) -> String {
        resolve(&base.parse().unwrap(), location)
            .unwrap()
            .to_string()
    }

    #[test]
    fn locations_resolve_against_the_url_they_came_from() {
        let base = "http://a.test:8/dir/page?x=1";
        assert_eq!(resolved(base, "https://b.test/n"), "https://b.test/n");
        assert_eq!(resolved(base, "//c.test/n"), "http://c.test/n");
        assert_eq!(resolved(base, "/top?y=2"), "http://a.test:8/top?y=2");
        assert_eq!(resolved(base, "?y=2"), "http://a.test:8/dir/page?y=2");
        assert_eq!(resolved(base, "other"), "http://a.test:8/dir/other");
        assert_eq!(resolved(base, "/n#frag"), "http://a.test:8/n");
        assert_eq!(resolved("http://a.test", "n"), "http://a.test/n");
    }

    #[test]
    fn a_location_that_is_not_http_is_refused() {
        let base: Uri = "http://a.test/".parse().unwrap();
        let error = resolve(&base, "ftp://x.test/").unwrap_err();
        assert!(error.contains("not an http or https URL"), "{error}");
        let error = resolve(&base, "http://a.test:99999/").unwrap_err();
        assert!(
            error.contains("port 99999 is not from 0 to 65535"),
            "{error}"
        );
    }

    #[test]
    fn see_other_turns_a_post_into_a_get_without_its_body_and_307_keeps_both() {
        let from: Uri = "http://a.test/form".parse().unwrap();
        let mut headers = HeaderMap::new();
        headers.insert(CONTENT_TYPE, "text/plain".parse().unwrap());
        headers.insert(AUTHORIZATION, "secret".parse().unwrap());
        let body = Bytes::from_static(b"data");
        let see_other = follow(
            StatusCode::SEE_OTHER,
            "/done",
            &from,
            &Method::POST,
            headers.clone(),
            body.clone(),
        )
        .unwrap();
        assert_eq!(see_other.method, Method::GET);
        assert!(see_other.body.is_empty());
        assert!(see_other.headers.get(CONTENT_TYPE).is_none());
        assert!(see_other.headers.get(AUTHORIZATION).is_some());
        let temporary = follow(
            StatusCode::TEMPORARY_REDIRECT,
            "http://elsewhere.test/again",
            &from,
            &Method::POST,
            headers,
            body,
        )
        .unwrap();
        assert_eq!(temporary.method, Method::POST);
        assert_eq!(&temporary.body[..], b"data");
        assert!(temporary.headers.get(AUTHORIZATION).is_none());
        assert!(temporary.headers.get(CONTENT_TYPE).is_some());
    }
}
