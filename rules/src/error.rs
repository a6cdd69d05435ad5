//! Errors of parsing and checking rules. Each names the field that is wrong, so a person editing
//! a ConfigMap or typing a flag knows what to fix.

/// Why a route table, a rule or a flag was refused.
#[derive(Debug, thiserror::Error)]
pub enum RulesError {
    /// The document is not valid YAML/JSON, or has an unknown or mistyped field.
    #[error("cannot parse the route table: {0}")]
    Parse(String),
    /// The table text is larger than the budget allows.
    #[error("the route table is {bytes} bytes; at most {max} are accepted")]
    TableTooLarge { bytes: usize, max: usize },
    /// The YAML uses an anchor or alias (`&a`, `*a`), which ktx never writes and which could
    /// expand without bound.
    #[error(
        "line {line}: YAML anchors and aliases (&name, *name) are not accepted in a route table"
    )]
    YamlAlias { line: usize },
    /// More rules than the budget allows.
    #[error("the route table has {rules} rules; at most {max} are accepted")]
    TooManyRules { rules: usize, max: usize },
    /// More regex conditions than the budget allows.
    #[error("{field}: more than {max} regex conditions in one route table")]
    TooManyRegexes { field: String, max: usize },
    /// One regex compiles to a larger program than the budget allows.
    #[error("{field}: the regex compiles to more than {max} bytes; simplify it")]
    RegexTooLarge { field: String, max: usize },
    /// A field has a value that is not allowed.
    #[error("{field}: {reason}")]
    InvalidField { field: String, reason: String },
    /// Two rules would match exactly the same requests.
    #[error(
        "{field}: same conditions as the rule of session '{other_session}' ({other_field}); \
         use a different mark, or end that session first"
    )]
    DuplicateConditions {
        field: String,
        other_field: String,
        other_session: String,
    },
    /// A flag could not be parsed.
    #[error("{flag} {value:?}: {reason}")]
    InvalidFlag {
        flag: &'static str,
        value: String,
        reason: String,
    },
}

impl RulesError {
    pub(crate) fn field(field: impl Into<String>, reason: impl Into<String>) -> Self {
        RulesError::InvalidField {
            field: field.into(),
            reason: reason.into(),
        }
    }
}
