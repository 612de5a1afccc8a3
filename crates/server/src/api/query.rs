//! OData query strings: decoded (`+` is a space), parsed into a typed query, and the
//! `@odata.nextLink` for the next page.

use appfence_core::odata::{parse_query, Field, Page, Query};
use appfence_core::Error;

/// Decodes a form-encoded query string into pairs.
pub fn decode(raw: Option<&str>) -> Result<Vec<(String, String)>, Error> {
    match raw {
        None | Some("") => Ok(Vec::new()),
        Some(q) => serde_urlencoded::from_str::<Vec<(String, String)>>(q)
            .map_err(|e| Error::OData(format!("The query string could not be decoded: {e}"))),
    }
}

/// Decoded query-string pairs, kept to build `@odata.nextLink`.
pub type Pairs = Vec<(String, String)>;

pub fn parse<F: Field>(raw: Option<&str>) -> Result<(Query<F>, Pairs), Error> {
    let pairs = decode(raw)?;
    let query = parse_query::<F>(&pairs)?;
    Ok((query, pairs))
}

/// The `@odata.nextLink` of a page: only when more results remain *and* the page showed
/// some, so that following links always makes progress (`$top=0` gets no link).
pub fn next_page_link<T>(
    base: &str,
    pairs: &[(String, String)],
    skip: u32,
    page: &Page<T>,
) -> Option<String> {
    (page.more && !page.items.is_empty())
        .then(|| next_link(base, pairs, skip as u64 + page.items.len() as u64))
}

/// The link to the page after this one: the same query with `$skip` advanced.
pub fn next_link(base: &str, pairs: &[(String, String)], next_skip: u64) -> String {
    let mut out: Vec<(String, String)> = pairs
        .iter()
        .filter(|(k, _)| k != "$skip")
        .cloned()
        .collect();
    out.push(("$skip".into(), next_skip.to_string()));
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

    #[test]
    fn empty_pages_get_no_next_link() {
        let empty = Page::<u8> {
            items: vec![],
            total: None,
            more: true,
        };
        assert_eq!(next_page_link("http://h/x", &[], 0, &empty), None);
        let page = Page {
            items: vec![1u8, 2],
            total: None,
            more: true,
        };
        assert_eq!(
            next_page_link("http://h/x", &[], 4, &page).as_deref(),
            Some("http://h/x?$skip=6")
        );
        let last = Page {
            items: vec![1u8],
            total: None,
            more: false,
        };
        assert_eq!(next_page_link("http://h/x", &[], 0, &last), None);
    }

    #[test]
    fn plus_is_a_space_and_next_link_replaces_skip() {
        let pairs = decode(Some("$filter=status+eq+%27Pending%27&$top=2&$skip=4")).unwrap();
        assert_eq!(pairs[0], ("$filter".into(), "status eq 'Pending'".into()));
        let link = next_link("http://h/api/machineactions", &pairs, 6);
        let back = decode(link.split_once('?').map(|x| x.1)).unwrap();
        assert!(back.contains(&("$skip".into(), "6".into())));
        assert!(back.contains(&("$top".into(), "2".into())));
        assert_eq!(back.iter().filter(|(k, _)| k == "$skip").count(), 1);
        assert!(
            link.contains("?$filter=status+eq+%27Pending%27&$top=2&$skip=6"),
            "{link}"
        );
    }
}
