//! Regular expressions clients send (ListTransactions' transactional-id pattern, a consumer
//! group's topic subscription), compiled with bounds.
//!
//! A pattern must match the whole string, as Java's `Pattern.matcher(s).matches()` on
//! Kafka. It runs on the `regex` crate, whose matching time is linear in pattern and input
//! length (no backtracking), so no pattern can freeze or crash the broker. Patterns longer
//! than [`PATTERN_BYTES_MAX`] or compiling past [`PATTERN_COMPILED_BYTES_MAX`] are refused
//! with INVALID_REQUEST; ones that do not parse (including Java-only syntax: backreferences,
//! lookaround) with INVALID_REGULAR_EXPRESSION, as Kafka answers a `PatternSyntaxException`.

use exacta_types::ErrorCode;

/// Longest pattern accepted, in bytes.
pub const PATTERN_BYTES_MAX: usize = 8 << 10;
/// Largest compiled program a pattern may produce, in bytes.
pub const PATTERN_COMPILED_BYTES_MAX: usize = 1 << 20;

/// A pattern the broker refuses, with the error code to answer.
#[derive(Debug, PartialEq, Eq)]
pub struct PatternError {
    pub code: ErrorCode,
    pub message: String,
}

/// Compiles `pattern` for whole-string matching; `what` names it in error messages
/// ("transactional id pattern").
pub fn compile_pattern(pattern: &str, what: &str) -> Result<regex::Regex, PatternError> {
    if pattern.len() > PATTERN_BYTES_MAX {
        return Err(PatternError {
            code: ErrorCode::InvalidRequest,
            message: format!(
                "{what} of {} bytes exceeds the limit of {PATTERN_BYTES_MAX}",
                pattern.len()
            ),
        });
    }
    regex::RegexBuilder::new(&format!("^(?:{pattern})$"))
        .size_limit(PATTERN_COMPILED_BYTES_MAX)
        .dfa_size_limit(2 * PATTERN_COMPILED_BYTES_MAX)
        .nest_limit(64)
        .build()
        .map_err(|e| match e {
            regex::Error::CompiledTooBig(limit) => PatternError {
                code: ErrorCode::InvalidRequest,
                message: format!("{what} compiles past the limit of {limit} bytes"),
            },
            other => PatternError {
                code: ErrorCode::InvalidRegularExpression,
                message: format!("invalid {what}: {other}"),
            },
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn compile(pattern: &str) -> Result<regex::Regex, PatternError> {
        compile_pattern(pattern, "pattern")
    }

    fn matches(pattern: &str, id: &str) -> bool {
        compile(pattern).unwrap().is_match(id)
    }

    #[test]
    fn patterns_match_whole_ids_like_java_matches() {
        assert!(matches("orders-.*", "orders-eu-1"));
        assert!(matches("a.c", "abc"));
        assert!(!matches("orders-.*", "payments-1"));
        assert!(matches("exact", "exact"));
        assert!(!matches("exact", "exactly"));
        assert!(!matches("act", "exact"));
        assert!(matches("(orders|payments)-[0-9]+", "payments-42"));
        assert!(matches("a|b", "b"), "alternation is inside the anchors");
    }

    #[test]
    fn pathological_patterns_are_linear_or_refused() {
        // Catastrophic for a backtracking matcher: (a*)^12 against 40 a's and a b.
        let started = std::time::Instant::now();
        let id = format!("{}b", "a".repeat(40));
        assert!(!matches(&"a*".repeat(12), &id));
        assert!(!matches("(a+)+$", &id));
        assert!(started.elapsed() < std::time::Duration::from_secs(1));
        // 200,000 repetitions: refused by length, not a stack overflow.
        let e = compile(&"a*".repeat(200_000)).unwrap_err();
        assert_eq!(e.code, ErrorCode::InvalidRequest);
        // Short but huge once compiled.
        let e = compile("(((a{100}){100}){100})").unwrap_err();
        assert_eq!(e.code, ErrorCode::InvalidRequest, "{}", e.message);
        // Deep nesting is refused, not recursed into.
        let e = compile(&format!("{}a{}", "(".repeat(1000), ")".repeat(1000))).unwrap_err();
        assert_eq!(e.code, ErrorCode::InvalidRegularExpression, "{}", e.message);
    }

    #[test]
    fn invalid_and_java_only_syntax_is_invalid_regular_expression() {
        for bad in ["(", "a{2,1}", "(a)\\1", "(?=a)a"] {
            let e = compile(bad).expect_err(bad);
            assert_eq!(e.code, ErrorCode::InvalidRegularExpression, "{bad}");
        }
    }
}
