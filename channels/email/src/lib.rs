//! ccu-email: the e-mail channel.
pub mod address;
pub mod smtp;
