//! Parser for OData query options. (Being written.)

use super::{Field, Query};
use crate::Error;

/// Parses the `$filter`, `$top`, `$skip`, `$orderby` and `$count` options from already
/// URL-decoded `(name, value)` pairs. Unknown `$` options are an `ODataError`; other
/// parameters are ignored.
pub fn parse_query<F: Field>(params: &[(String, String)]) -> Result<Query<F>, Error> {
    let _ = params;
    Err(Error::OData("not implemented yet".into()))
}
