//! The scenario language (strace syntax): AST and parser.

pub mod ast;
pub mod parse;

pub use ast::{Call, Expect, Script, Step};
pub use parse::{ParseError, format_result, parse_file, parse_str};
