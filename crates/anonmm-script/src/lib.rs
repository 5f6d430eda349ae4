//! The scenario language (strace syntax): AST, parser and formatter ([`ast`], [`parse`]),
//! the random generator and shrinker the fuzzers use (`gen`), and the command
//! line's standard output and error style ([`out`](mod@out)). It depends on `anonmm-abi` only: a
//! script is data, and running one is the harness's job (ARCHITECTURE.md).

#![warn(missing_docs)]

pub mod ast;
pub mod parse;

pub use ast::{CALL_NAMES, Call, Expect, RecordedVma, Script, Step};
pub use parse::{
    ParseError, ParseOptions, format_call, format_result, format_result_for, format_step, parse_file,
    parse_file_with, parse_str, parse_str_with,
};
pub mod r#gen;
pub mod out;

// The ABI layer's modules, under the paths the files use (`crate::types::Pid`).
use anonmm_abi::{abi, errno, types};
