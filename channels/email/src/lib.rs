//! ccu-email: the e-mail channel.
pub mod address;
mod html;
pub mod inbound;
pub mod noise;
pub mod outbound;
pub mod smtp;
pub mod threading;

pub use html::html_to_safe_text;
