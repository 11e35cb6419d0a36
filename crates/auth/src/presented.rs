//! Where a caller presents its ticket: `Authorization: Bearer <jwt>` (HTTP, gRPC metadata,
//! gRPC-Web) or `?access_token=<jwt>` in the URL (WebSocket and plain HTTP GETs from a browser,
//! which cannot set headers on a WebSocket). One parser for every edge, so they agree on what
//! counts as a presented ticket.

/// The token of an `Authorization` value with the `Bearer` scheme (any case), trimmed;
/// `None` for another scheme or an empty token.
pub fn bearer(authorization: &str) -> Option<&str> {
    let (scheme, rest) = authorization.trim_start().split_once(' ')?;
    let token = rest.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

/// The first value of `key` in an `application/x-www-form-urlencoded` query, percent-decoded.
/// `None` when the key is absent or its value does not decode to UTF-8.
pub fn query_value(query: &str, key: &str) -> Option<String> {
    query
        .split('&')
        .map(|pair| pair.split_once('=').unwrap_or((pair, "")))
        .find(|(k, _)| *k == key)
        .and_then(|(_, v)| percent_decode(v))
}

/// The ticket a request presents: `?access_token=` first, then `Authorization: Bearer`.
pub fn ticket(authorization: Option<&str>, query: Option<&str>) -> Option<String> {
    query
        .and_then(|q| query_value(q, "access_token"))
        .filter(|t| !t.is_empty())
        .or_else(|| authorization.and_then(bearer).map(str::to_string))
}

/// Decodes `%XX` escapes and `+` (a space in form encoding). `None` on a bad escape or when
/// the result is not UTF-8.
pub fn percent_decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' => {
                let hex = b.get(i + 1..i + 3)?;
                let hex = std::str::from_utf8(hex).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_scheme_any_case_trimmed() {
        assert_eq!(bearer("Bearer abc"), Some("abc"));
        assert_eq!(bearer("bearer  abc  "), Some("abc"));
        assert_eq!(bearer("BEARER abc"), Some("abc"));
        assert_eq!(bearer("Basic abc"), None);
        assert_eq!(bearer("Bearer "), None);
        assert_eq!(bearer("Bearer"), None);
        assert_eq!(bearer(""), None);
    }

    #[test]
    fn query_values_decode() {
        assert_eq!(
            query_value("a=1&access_token=x%2Ey&b", "access_token").as_deref(),
            Some("x.y")
        );
        assert_eq!(query_value("b&a=1", "b").as_deref(), Some(""));
        assert_eq!(query_value("a=1", "access_token"), None);
        assert_eq!(query_value("access_token=%zz", "access_token"), None);
        assert_eq!(query_value("access_token=%4", "access_token"), None);
        assert_eq!(query_value("access_token=%ff", "access_token"), None);
        assert_eq!(query_value("q=a+b", "q").as_deref(), Some("a b"));
    }

    #[test]
    fn ticket_prefers_the_query_then_the_header() {
        assert_eq!(
            ticket(Some("Bearer h"), Some("access_token=q")).as_deref(),
            Some("q")
        );
        assert_eq!(
            ticket(Some("Bearer h"), Some("access_token=")).as_deref(),
            Some("h")
        );
        assert_eq!(ticket(Some("Bearer h"), None).as_deref(), Some("h"));
        assert_eq!(ticket(None, Some("token=x")), None);
        assert_eq!(ticket(None, None), None);
    }
}
