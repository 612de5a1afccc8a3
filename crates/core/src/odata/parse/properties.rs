//! Property tests of the OData parser: any combination of the grammar's pieces and of
//! arbitrary text, in any option, either parses or is refused with an `ODataError`
//! (never a panic, never another error); well-formed filters always parse.

use proptest::prelude::*;

use super::parse_query;
use crate::odata::{ActionField, EventField, IndicatorField, MachineField};
use crate::Error;

fn piece() -> impl Strategy<Value = String> {
    let fixed = [
        "status",
        "machineId",
        "type",
        "requestor",
        "lastUpdateDateTimeUtc",
        "creationDateTimeUtc",
        "computerDnsName",
        "healthStatus",
        "osPlatform",
        "machineTags",
        "rbacGroupId",
        "id",
        "indicatorValue",
        "action",
        "title",
        " eq ",
        " ne ",
        " gt ",
        " lt ",
        " ge ",
        " le ",
        " and ",
        " or ",
        "not ",
        "(",
        ")",
        "'",
        "''",
        "'Pending'",
        "'Succeeded'",
        "2024-01-01T00:00:00Z",
        "2024-13-45T99:00Z",
        "/any(t: t eq 'x')",
        "/all(t: t ne 'y')",
        ",",
        " in (",
        " asc",
        " desc",
        "null",
        "true",
        "-1",
        "9999999999999999999999",
        "contains(",
        "startswith(",
        " ",
    ];
    prop_oneof![
        4 => proptest::sample::select(fixed.to_vec()).prop_map(String::from),
        1 => "[ -~]{0,6}",
        1 => "\\PC{0,3}",
    ]
}

fn text() -> impl Strategy<Value = String> {
    proptest::collection::vec(piece(), 0..24).prop_map(|v| v.concat())
}

fn option() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("$filter".to_string()),
        Just("$orderby".to_string()),
        Just("$top".to_string()),
        Just("$skip".to_string()),
        Just("$count".to_string()),
        Just("$FILTER".to_string()),
        Just("$expand".to_string()),
        Just("plain".to_string()),
    ]
}

/// Parses `params` for every collection; each answer must be a query or an OData error.
fn check(params: &[(String, String)]) -> Result<(), TestCaseError> {
    let outcomes = [
        parse_query::<ActionField>(params).map(|_| ()),
        parse_query::<MachineField>(params).map(|_| ()),
        parse_query::<IndicatorField>(params).map(|_| ()),
        parse_query::<EventField>(params).map(|_| ()),
    ];
    for outcome in outcomes {
        match outcome {
            Ok(()) => {}
            Err(Error::OData(message)) => prop_assert!(!message.is_empty()),
            Err(other) => prop_assert!(false, "not an OData error: {other:?} for {params:?}"),
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2_000, ..ProptestConfig::default() })]

    #[test]
    fn any_query_parses_or_is_an_odata_error(
        options in proptest::collection::vec((option(), text()), 0..6)
    ) {
        check(&options)?;
    }

    #[test]
    fn deep_nesting_is_refused_not_overflowed(depth in 0usize..5_000) {
        let filter = format!("{}status eq 'Pending'{}", "(".repeat(depth), ")".repeat(depth));
        check(&[("$filter".to_string(), filter)])?;
    }

    #[test]
    fn well_formed_filters_parse(
        status in proptest::sample::select(vec!["Pending", "InProgress", "Succeeded", "Failed", "TimeOut", "Cancelled"]),
        machine in "[0-9a-f]{40}",
        kind in proptest::sample::select(vec!["RestrictCodeExecution", "UnrestrictCodeExecution"]),
        top in 1u32..=10_000,
        skip in 0u32..1_000_000,
        joiner in proptest::sample::select(vec![" and ", " or "]),
    ) {
        let filter = format!("status eq '{status}'{joiner}(machineId eq '{machine}' and type eq '{kind}')");
        let params = vec![
            ("$filter".to_string(), filter),
            ("$top".to_string(), top.to_string()),
            ("$skip".to_string(), skip.to_string()),
            ("$orderby".to_string(), "creationDateTimeUtc desc".to_string()),
        ];
        let parsed = parse_query::<ActionField>(&params);
        prop_assert!(parsed.is_ok(), "{params:?}: {parsed:?}");
    }
}
