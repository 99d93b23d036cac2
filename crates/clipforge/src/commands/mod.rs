//! One module per subcommand.

pub mod bench;
pub mod embed;
pub mod eval;
pub mod init;
pub mod quickstart;
pub mod tokenize;
pub mod train;
