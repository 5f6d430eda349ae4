//! Parser stub (to be written).
use super::ast::*;
#[derive(Debug, thiserror::Error)]
#[error("{path}:{line}: {reason}")]
pub struct ParseError {
    pub path: String,
    pub line: usize,
    pub reason: String,
}
pub fn parse_str(_path: &str, _text: &str) -> Result<Script, ParseError> {
    unimplemented!()
}
pub fn parse_file(_path: &std::path::Path) -> Result<Script, ParseError> {
    unimplemented!()
}
pub fn format_result(_r: &Expect) -> String {
    unimplemented!()
}
