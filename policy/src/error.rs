//! The crate's one error enum.

/// Why an object, a document or a ruleset was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// A document that does not parse (YAML or JSON), with where.
    #[error("{file}: document {index}: {reason}")]
    Parse {
        /// The file (or source) it came from.
        file: String,
        /// The document's position in the file, from 1.
        index: usize,
        /// What the parser said.
        reason: String,
    },
    /// An object that parses but breaks a rule of its kind (a bad selector operator, a port out of
    /// range, a CIDR that is not one, ...), naming the object and the field.
    #[error("{kind} {key}: {field}: {reason}")]
    Invalid {
        /// `NetworkPolicy`, `Pod`, `Namespace`, `Node`.
        kind: String,
        /// `namespace/name` (or `name`).
        key: String,
        /// The field path, `spec.ingress[0].from[1].ipBlock.cidr`.
        field: String,
        /// What is wrong.
        reason: String,
    },
}
