//! One module per subcommand.

pub mod embed;
pub mod init;
pub mod tokenize;
