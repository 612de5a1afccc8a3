//! OData query options (`$filter`, `$top`, `$skip`, `$orderby`, `$count`) parsed into a
//! typed expression over a collection's fields. The store translates the expression to
//! SQL with every value bound as a parameter; nothing from the query is pasted into SQL.

mod fields;
mod parse;

pub use fields::{ActionField, AlertField, EventField, IndicatorField, MachineField};
pub use parse::parse_query;

use appfence_proto::Timestamp;

/// The most `$top` may ask for, as in MDE.
pub const MAX_TOP: u32 = 10_000;

/// The type of a filterable property, which decides which literals and operators fit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FieldType {
    String,
    /// A string restricted to these values (e.g. `status`).
    Enum(&'static [&'static str]),
    Timestamp,
    Integer,
    /// A collection of strings (e.g. `machineTags`): only `any(...)`-style matching.
    StringCollection,
}

/// A filterable property of one collection.
pub trait Field: Copy + Eq + std::fmt::Debug + Send + Sync + 'static {
    /// The entity name used in error messages (`MachineAction`, `Machine`).
    const ENTITY: &'static str;
    /// Every field, to look names up.
    fn all() -> &'static [Self];
    /// The wire (camelCase) name.
    fn name(self) -> &'static str;
    fn field_type(self) -> FieldType;
    /// Whether `$orderby` may use this field.
    fn sortable(self) -> bool {
        !matches!(self.field_type(), FieldType::StringCollection)
    }
    /// Navigation properties `$expand` may name (none unless the collection has some).
    fn expandable() -> &'static [&'static str] {
        &[]
    }
    /// Case-insensitive lookup, as MDE matches property names.
    fn lookup(name: &str) -> Option<Self> {
        Self::all()
            .iter()
            .copied()
            .find(|f| f.name().eq_ignore_ascii_case(name))
    }
}

/// A literal, already checked against its field's type.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    String(String),
    Timestamp(Timestamp),
    Integer(i64),
    Null,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CmpOp {
    Eq,
    Ne,
    Gt,
    Ge,
    Lt,
    Le,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Expr<F> {
    And(Box<Expr<F>>, Box<Expr<F>>),
    Or(Box<Expr<F>>, Box<Expr<F>>),
    Not(Box<Expr<F>>),
    Compare {
        field: F,
        op: CmpOp,
        value: Value,
    },
    In {
        field: F,
        values: Vec<Value>,
    },
    StartsWith {
        field: F,
        prefix: String,
    },
    /// `machineTags/any(t: t eq 'x')`: the collection holds this value.
    Contains {
        field: F,
        value: String,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    Asc,
    Desc,
}

/// A parsed and validated query over one collection.
#[derive(Clone, Debug, PartialEq)]
pub struct Query<F> {
    pub filter: Option<Expr<F>>,
    /// Page size; `None` means the default page size of the collection.
    pub top: Option<u32>,
    pub skip: u32,
    /// Empty means the collection's default order (newest first).
    pub order_by: Vec<(F, Direction)>,
    /// `$count=true`: answer with `@odata.count`.
    pub count: bool,
    /// Keyset continuation (from the `$skiptoken` of an `@odata.nextLink`): the sort key
    /// of the last row of the previous page, the tie-break last. The page starts right
    /// after that row (then `skip` applies), so following next links never reads the
    /// rows before the page again.
    pub after: Option<Vec<KeyValue>>,
    /// `$expand`: the navigation properties asked for (from [`Field::expandable`]).
    pub expand: Vec<&'static str>,
}

impl<F> Query<F> {
    /// Whether `$expand` named this navigation property.
    pub fn expands(&self, property: &str) -> bool {
        self.expand.contains(&property)
    }
}

/// One value of a row's sort key (an order field or the tie-break).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(untagged)]
pub enum KeyValue {
    Null,
    Int(i64),
    Text(String),
}

impl<F> Default for Query<F> {
    fn default() -> Self {
        Query {
            filter: None,
            top: None,
            skip: 0,
            order_by: Vec::new(),
            count: false,
            after: None,
            expand: Vec::new(),
        }
    }
}

/// One page of a collection.
#[derive(Clone, Debug, PartialEq)]
pub struct Page<T> {
    pub items: Vec<T>,
    /// Total matching the filter (ignoring `$top`/`$skip`), when `$count=true`.
    pub total: Option<u64>,
    /// More results remain after this page.
    pub more: bool,
    /// The sort key of the last item (order fields, then the tie-break), when more
    /// results remain: where the next page starts.
    pub last_key: Option<Vec<KeyValue>>,
}
