//! The scenario language (strace syntax): AST and parser.

pub mod ast;
pub mod parse;

pub use ast::{CALL_NAMES, Call, Expect, Script, Step};
pub use parse::{
    ParseError, ParseOptions, format_call, format_result, format_result_for, format_step, parse_file,
    parse_file_with, parse_str, parse_str_with,
};
pub mod r#gen;
pub mod out;

// The ABI layer's modules, under the paths the files use (`crate::types::Pid`).
use anonmm_abi::{abi, errno, types};
