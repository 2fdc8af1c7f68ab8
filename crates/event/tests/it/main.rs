//! Integration tests of herald-event: the documented examples, the decoder's errors, hostile inputs.

mod decode;
mod docs;
mod hostile;
