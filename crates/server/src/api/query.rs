//! OData query strings: decoded (`+` is a space), parsed into a typed query, and the
//! `@odata.nextLink` for the next page.

use appfence_core::odata::{parse_query, Expr, Field, KeyValue, Page, Query};
use appfence_core::Error;

/// Decodes a form-encoded query string into pairs.
pub fn decode(raw: Option<&str>) -> Result<Vec<(String, String)>, Error> {
    match raw {
        None | Some("") => Ok(Vec::new()),
        Some(q) => serde_urlencoded::from_str::<Vec<(String, String)>>(q)
            .map_err(|e| Error::OData(format!("The query string could not be decoded: {e}"))),
    }
}

/// Decoded query-string pairs, kept to build `@odata.nextLink` (without `$skip` and
/// `$skiptoken`, which the link replaces).
pub type Pairs = Vec<(String, String)>;

/// The option that carries a keyset continuation in `@odata.nextLink`.
const SKIP_TOKEN: &str = "$skiptoken";

/// A continuation token: the query it belongs to and the last row's sort key.
#[derive(serde::Serialize, serde::Deserialize)]
struct Token {
    /// [`fingerprint`] of the query.
    q: String,
    /// The sort key of the last row of the previous page (order fields, tie-break last).
    k: Vec<KeyValue>,
}

/// `filter`, narrowed to what `also` matches too (a collection under one machine).
pub fn narrow<F>(filter: &mut Option<Expr<F>>, also: Expr<F>) {
    *filter = Some(match filter.take() {
        Some(f) => Expr::And(Box::new(f), Box::new(also)),
        None => also,
    });
}

pub fn parse<F: Field>(raw: Option<&str>) -> Result<(Query<F>, Pairs), Error> {
    let mut pairs = decode(raw)?;
    let mut tokens = Vec::new();
    pairs.retain(|(k, v)| {
        let token = k.eq_ignore_ascii_case(SKIP_TOKEN);
        if token {
            tokens.push(v.clone());
        }
        !token
    });
    let mut query = parse_query::<F>(&pairs)?;
    match tokens.as_slice() {
        [] => {}
        [token] => query.after = Some(read_token(token, &pairs)?),
        _ => {
            return Err(Error::OData(format!(
                "Query option '{SKIP_TOKEN}' was specified more than once"
            )))
        }
    }
    pairs.retain(|(k, _)| !k.eq_ignore_ascii_case("$skip"));
    Ok((query, pairs))
}

/// What a continuation token is bound to: the filter and the order (another query's
/// token would start at a meaningless place). Not a secret: the token only says where
/// a page starts, and the store checks that its key fits the order.
fn fingerprint(pairs: &[(String, String)]) -> String {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    for option in ["$filter", "$orderby"] {
        h.update(option.as_bytes());
        h.update([0]);
        if let Some((_, v)) = pairs.iter().find(|(k, _)| k.eq_ignore_ascii_case(option)) {
            h.update(v.as_bytes());
        }
        h.update([0]);
    }
    hex::encode(&h.finalize()[..12])
}

fn write_token(pairs: &[(String, String)], key: &[KeyValue]) -> String {
    use base64::Engine;
    let token = Token {
        q: fingerprint(pairs),
        k: key.to_vec(),
    };
    let json = serde_json::to_vec(&token).unwrap_or_default();
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(json)
}

fn read_token(token: &str, pairs: &[(String, String)]) -> Result<Vec<KeyValue>, Error> {
    use base64::Engine;
    let bad = || {
        Error::OData(format!(
            "The value of '{SKIP_TOKEN}' is not a continuation token of this query; follow \
             @odata.nextLink as given"
        ))
    };
    if token.len() > 4096 {
        return Err(bad());
    }
    let json = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(token.trim())
        .map_err(|_| bad())?;
    let token: Token = serde_json::from_slice(&json).map_err(|_| bad())?;
    if token.q != fingerprint(pairs) || token.k.is_empty() {
        return Err(bad());
    }
    Ok(token.k)
}

/// The `@odata.nextLink` of a page: only when more results remain *and* the page showed
/// some, so that following links always makes progress (`$top=0` gets no link). The
/// link carries the last row's sort key (`$skiptoken`), so the next page starts right
/// after it through the index instead of skipping rows.
pub fn next_page_link<T>(base: &str, pairs: &[(String, String)], page: &Page<T>) -> Option<String> {
    if !page.more || page.items.is_empty() {
        return None;
    }
    let key = page.last_key.as_ref()?;
    Some(link(base, pairs, &write_token(pairs, key)))
}

/// The same query with `$skip` and `$skiptoken` replaced by this token.
fn link(base: &str, pairs: &[(String, String)], token: &str) -> String {
    let mut out: Vec<(String, String)> = pairs
        .iter()
        .filter(|(k, _)| !k.eq_ignore_ascii_case("$skip") && !k.eq_ignore_ascii_case(SKIP_TOKEN))
        .cloned()
        .collect();
    out.push((SKIP_TOKEN.into(), token.to_string()));
    let qs = serde_urlencoded::to_string(&out).unwrap_or_default();
    // Option names keep their literal `$`, as MDE writes them (`$skip=`, not `%24skip=`).
    let qs: Vec<String> = qs
        .split('&')
        .map(|kv| match kv.strip_prefix("%24") {
            Some(rest) => format!("${rest}"),
            None => kv.to_string(),
        })
        .collect();
    format!("{base}?{}", qs.join("&"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use appfence_core::odata::ActionField;

    fn page(items: Vec<u8>, more: bool, key: Option<Vec<KeyValue>>) -> Page<u8> {
        Page {
            items,
            total: None,
            more,
            last_key: key,
        }
    }

    #[test]
    fn empty_and_last_pages_get_no_next_link() {
        let key = Some(vec![KeyValue::Int(1)]);
        assert_eq!(
            next_page_link("http://h/x", &[], &page(vec![], true, key.clone())),
            None
        );
        assert_eq!(
            next_page_link("http://h/x", &[], &page(vec![1], false, None)),
            None
        );
        let link = next_page_link("http://h/x", &[], &page(vec![1, 2], true, key)).unwrap();
        assert!(link.starts_with("http://h/x?$skiptoken="), "{link}");
    }

    #[test]
    fn next_link_keeps_the_query_and_replaces_skip_with_a_token() {
        let raw = "$filter=status+eq+%27Pending%27&$top=2&$skip=4&$orderby=requestor desc";
        let (q, pairs) = parse::<ActionField>(Some(raw)).unwrap();
        assert_eq!((q.skip, q.after.clone()), (4, None));
        assert_eq!(pairs[0], ("$filter".into(), "status eq 'Pending'".into()));
        let key = vec![KeyValue::Text("App3".into()), KeyValue::Int(42)];
        let link = next_page_link(
            "http://h/api/machineactions",
            &pairs,
            &page(vec![1], true, Some(key.clone())),
        )
        .unwrap();
        assert!(
            link.contains("?$filter=status+eq+%27Pending%27&$top=2&"),
            "{link}"
        );
        assert!(!link.contains("$skip="), "{link}");
        // Following the link gives the same query, starting after the key, no skip.
        let (next, again) = parse::<ActionField>(link.split_once('?').map(|x| x.1)).unwrap();
        assert_eq!(next.after, Some(key));
        assert_eq!(
            (
                next.skip,
                next.top,
                next.filter.clone(),
                next.order_by.clone()
            ),
            (0, q.top, q.filter.clone(), q.order_by.clone())
        );
        assert_eq!(
            again,
            pairs
                .iter()
                .filter(|(k, _)| k != "$skip")
                .cloned()
                .collect::<Vec<_>>()
        );
    }

    #[test]
    fn tokens_of_another_query_or_garbage_are_refused() {
        let (_, pairs) = parse::<ActionField>(Some("$orderby=requestor desc")).unwrap();
        let link = next_page_link(
            "http://h/x",
            &pairs,
            &page(vec![1], true, Some(vec![KeyValue::Int(1)])),
        )
        .unwrap();
        let token = link.split_once("$skiptoken=").unwrap().1;
        // Another order: refused.
        let other = format!("$orderby=requestor asc&$skiptoken={token}");
        assert!(matches!(
            parse::<ActionField>(Some(&other)),
            Err(Error::OData(_))
        ));
        // Garbage, and a token given twice: refused.
        for raw in [
            "$skiptoken=not-a-token".to_string(),
            "$skiptoken=e30".to_string(),
            format!("$orderby=requestor desc&$skiptoken={token}&$SKIPTOKEN={token}"),
        ] {
            assert!(
                matches!(parse::<ActionField>(Some(&raw)), Err(Error::OData(_))),
                "{raw}"
            );
        }
        // The right query takes it.
        let same = format!("$orderby=requestor desc&$skiptoken={token}");
        assert_eq!(
            parse::<ActionField>(Some(&same)).unwrap().0.after,
            Some(vec![KeyValue::Int(1)])
        );
    }
}
