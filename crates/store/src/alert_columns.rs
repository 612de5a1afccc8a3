//! How the alert collection maps to the `alert_rows` view, the same on both engines:
//! each OData field's column, the default order (newest `created` first) and its keys.

use appfence_core::odata::{AlertField, Direction};

use crate::odata_sql::{Column, SortKey};

pub(crate) fn column(f: AlertField) -> Column {
    match f {
        AlertField::Id => Column::Text("id"),
        AlertField::AlertCreationTime => Column::Int("created"),
        AlertField::LastUpdateTime => Column::Int("last_update"),
        AlertField::LastEventTime => Column::Int("last_event"),
        AlertField::FirstEventTime => Column::Int("first_event"),
        AlertField::ResolvedTime => Column::Int("resolved"),
        AlertField::Status => Column::Text("status"),
        AlertField::Severity => Column::Text("severity"),
        AlertField::MachineId => Column::Text("machine_id"),
        AlertField::ComputerDnsName => Column::NoCaseText("computer_dns_name"),
        AlertField::Category => Column::NoCaseText("category"),
        AlertField::DetectionSource => Column::NoCaseText("detection_source"),
        AlertField::DetectorId => Column::Text("detector_id"),
        AlertField::AssignedTo => Column::NoCaseText("assigned_to"),
        AlertField::Classification => Column::Text("classification"),
        AlertField::Determination => Column::Text("determination"),
        AlertField::Title => Column::NoCaseText("title"),
        // appfence has no incidents or investigations: always null.
        AlertField::IncidentId | AlertField::InvestigationId => Column::Int("CAST(NULL AS BIGINT)"),
    }
}

pub(crate) const DEFAULT_ORDER: &str = "created DESC, seq DESC";

pub(crate) const TIEBREAK_KEY: SortKey = SortKey {
    col: Column::Int("seq"),
    dir: Direction::Desc,
    nullable: false,
};

pub(crate) const DEFAULT_KEYS: &[SortKey] = &[
    SortKey {
        col: Column::Int("created"),
        dir: Direction::Desc,
        nullable: false,
    },
    TIEBREAK_KEY,
];

pub(crate) const NULLABLE: &[&str] = &[
    "resolved",
    "assigned_to",
    "classification",
    "determination",
    "computer_dns_name",
];
