//! Errors of parsing and checking rules. Each names the field that is wrong, so a person editing
//! a ConfigMap or typing a flag knows what to fix.

/// Why a route table, a rule or a flag was refused.
#[derive(Debug, thiserror::Error)]
pub enum RulesError {
    /// The document is not valid YAML/JSON, or has an unknown or mistyped field.
    #[error("cannot parse the route table: {0}")]
    Parse(String),
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
