//! Cover thumbnails: an uploaded image decoded and scaled to [`WIDTHS`], as JPEG. Runs on
//! the files thread ([`super::files`]), never on a shard.
//!
//! Decompression bombs are refused from the header: the decoder is built (which reads only
//! the header: PNG's `IHDR`, JPEG's frame header, WebP's `VP8*` chunk) and its dimensions are
//! checked against [`MAX_SIDE`] and [`MAX_PIXELS`] before a pixel is decoded, so a 20,000 ×
//! 20,000 PNG of a few KB costs microseconds and no memory. What may be decoded is bounded
//! twice: the dimensions, and [`image::Limits::max_alloc`] ([`MAX_ALLOC`]) which covers the
//! decoded buffer (the largest allowed image in 16-bit RGBA is exactly that). One image is
//! decoded at a time (the files thread is one thread), so the process holds at most one
//! such buffer. The dimension cap bounds decode time too (see `docs/api.md`, "Covers").
//!
//! Thumbnails are JPEG: the `image` crate's WebP encoder is lossless only, which for photos
//! is several times larger than a JPEG at quality [`QUALITY`]. Transparent pixels are laid
//! over white (JPEG has no alpha). An image narrower than a width is not enlarged: that
//! thumbnail has the image's own size, so both URLs always exist. EXIF orientation (JPEG,
//! WebP) is applied, so a portrait phone photo gives a portrait thumbnail.

use std::io::Cursor;

use image::{DynamicImage, ImageDecoder, ImageFormat, ImageReader, Limits};

/// Thumbnail widths, in pixels, smallest first.
pub const WIDTHS: [u32; 2] = [320, 640];
/// The longest side an upload may have.
pub const MAX_SIDE: u32 = 8192;
/// The most pixels an upload may have (16 Mpx: 4096 × 4096, or a 4:3 photo of 4618 × 3464).
pub const MAX_PIXELS: u64 = 16 * 1024 * 1024;
/// The most the decoder may allocate: [`MAX_PIXELS`] at 8 bytes a pixel (RGBA, 16 bits).
pub const MAX_ALLOC: u64 = MAX_PIXELS * 8;
/// JPEG quality of the thumbnails.
pub const QUALITY: u8 = 82;

/// Why an image was not accepted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// The header's dimensions are over [`MAX_SIDE`] or [`MAX_PIXELS`].
    TooLarge { width: u32, height: u32 },
    /// The image cannot be decoded (truncated, corrupt, or an unsupported variant).
    Undecodable(String),
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refusal::TooLarge { width, height } => write!(
                f,
                "the image is {width} x {height} pixels: at most {MAX_SIDE} a side and {} \
                 Mpx are accepted",
                MAX_PIXELS >> 20
            ),
            Refusal::Undecodable(e) => write!(f, "the image cannot be decoded: {e}"),
        }
    }
}

/// One thumbnail: its size and its JPEG bytes.
#[derive(Clone, Debug)]
pub struct Thumb {
    pub width: u32,
    pub height: u32,
    pub jpeg: Vec<u8>,
}

/// The name of `original`'s thumbnail `width` pixels wide: `<stem>-<width>.jpg`.
pub fn name(original: &str, width: u32) -> String {
    let stem = original.split_once('.').map_or(original, |(s, _)| s);
    format!("{stem}-{width}.jpg")
}

/// The format a stored name's extension stands for.
pub fn format_of(name: &str) -> Option<ImageFormat> {
    match name.rsplit_once('.')?.1 {
        "jpg" => Some(ImageFormat::Jpeg),
        "png" => Some(ImageFormat::Png),
        "webp" => Some(ImageFormat::WebP),
        _ => None,
    }
}

fn undecodable(e: image::ImageError) -> Refusal {
    match e {
        // A decoder's own limit (an allocation over MAX_ALLOC): the image is too large
        // for us whatever its header said.
        image::ImageError::Limits(_) => Refusal::Undecodable("it needs too much memory".into()),
        other => Refusal::Undecodable(other.to_string()),
    }
}

/// The height of an image `w` × `h` scaled to `width` wide (at least one pixel).
fn scaled(w: u32, h: u32, width: u32) -> u32 {
    ((u64::from(h) * u64::from(width) + u64::from(w) / 2) / u64::from(w)).max(1) as u32
}

/// The thumbnails of `bytes` (a `format` image), one per [`WIDTHS`], and the image's
/// (oriented) dimensions.
pub fn derive(bytes: &[u8], format: ImageFormat) -> Result<((u32, u32), Vec<Thumb>), Refusal> {
    let mut limits = Limits::default();
    limits.max_alloc = Some(MAX_ALLOC);
    let mut reader = ImageReader::with_format(Cursor::new(bytes), format);
    reader.limits(limits.clone());
    // Reads the header only.
    let mut decoder = reader.into_decoder().map_err(undecodable)?;
    let (w, h) = decoder.dimensions();
    if w == 0 || h == 0 {
        return Err(Refusal::Undecodable("it has no pixels".into()));
    }
    if w > MAX_SIDE || h > MAX_SIDE || u64::from(w) * u64::from(h) > MAX_PIXELS {
        return Err(Refusal::TooLarge {
            width: w,
            height: h,
        });
    }
    limits.max_image_width = Some(MAX_SIDE);
    limits.max_image_height = Some(MAX_SIDE);
    decoder.set_limits(limits).map_err(undecodable)?;
    if decoder.total_bytes() > MAX_ALLOC {
        return Err(Refusal::TooLarge {
            width: w,
            height: h,
        });
    }
    let orientation = decoder
        .orientation()
        .unwrap_or(image::metadata::Orientation::NoTransforms);
    let image = DynamicImage::from_decoder(decoder).map_err(undecodable)?;
    // Rotations by a quarter turn swap the sides: scale the stored image so that, once
    // turned, the thumbnail has the promised width.
    let turned = matches!(
        orientation,
        image::metadata::Orientation::Rotate90
            | image::metadata::Orientation::Rotate270
            | image::metadata::Orientation::Rotate90FlipH
            | image::metadata::Orientation::Rotate270FlipH
    );
    let (ow, oh) = if turned { (h, w) } else { (w, h) };
    let mut thumbs = Vec::with_capacity(WIDTHS.len());
    // Largest first, each from the original (a thumbnail of a thumbnail blurs twice).
    for &width in WIDTHS.iter().rev() {
        let tw = width.min(ow);
        let th = scaled(ow, oh, tw);
        // Not enlarged: an image this narrow is encoded at its own size (converted to
        // 8-bit RGB, turned), without a copy at its own depth first.
        let rgb = if (tw, th) == (ow, oh) {
            let mut rgb = DynamicImage::ImageRgb8(over_white(&image));
            rgb.apply_orientation(orientation);
            rgb.into_rgb8()
        } else {
            let mut small = if turned {
                image.thumbnail_exact(th, tw)
            } else {
                image.thumbnail_exact(tw, th)
            };
            small.apply_orientation(orientation);
            over_white(&small)
        };
        let mut jpeg = Vec::new();
        let encoder = image::codecs::jpeg::JpegEncoder::new_with_quality(&mut jpeg, QUALITY);
        rgb.write_with_encoder(encoder)
            .map_err(|e| Refusal::Undecodable(e.to_string()))?;
        thumbs.push(Thumb {
            width: rgb.width(),
            height: rgb.height(),
            jpeg,
        });
    }
    thumbs.reverse();
    Ok(((ow, oh), thumbs))
}

/// `image` as 8-bit RGB, transparent pixels laid over white.
fn over_white(image: &DynamicImage) -> image::RgbImage {
    if !image.color().has_alpha() {
        return image.to_rgb8();
    }
    let rgba = image.to_rgba8();
    let mut out = image::RgbImage::new(rgba.width(), rgba.height());
    for (o, p) in out.pixels_mut().zip(rgba.pixels()) {
        let a = u32::from(p[3]);
        for c in 0..3 {
            o[c] = ((u32::from(p[c]) * a + 255 * (255 - a) + 127) / 255) as u8;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encode(img: &DynamicImage, format: ImageFormat) -> Vec<u8> {
        let mut out = Cursor::new(Vec::new());
        img.write_to(&mut out, format).unwrap();
        out.into_inner()
    }

    #[test]
    fn widths_keep_the_aspect_and_never_enlarge() {
        let big = DynamicImage::new_rgb8(1280, 720);
        let (dims, thumbs) = derive(&encode(&big, ImageFormat::Png), ImageFormat::Png).unwrap();
        assert_eq!(dims, (1280, 720));
        let sizes: Vec<_> = thumbs.iter().map(|t| (t.width, t.height)).collect();
        assert_eq!(sizes, [(320, 180), (640, 360)]);
        for t in &thumbs {
            let back = image::load_from_memory_with_format(&t.jpeg, ImageFormat::Jpeg).unwrap();
            assert_eq!((back.width(), back.height()), (t.width, t.height));
        }
        let small = DynamicImage::new_rgba8(200, 100);
        let (_, thumbs) = derive(&encode(&small, ImageFormat::Png), ImageFormat::Png).unwrap();
        let sizes: Vec<_> = thumbs.iter().map(|t| (t.width, t.height)).collect();
        assert_eq!(sizes, [(200, 100), (200, 100)], "not enlarged");
        let jpeg = encode(&DynamicImage::new_rgb8(500, 1000), ImageFormat::Jpeg);
        let (_, thumbs) = derive(&jpeg, ImageFormat::Jpeg).unwrap();
        let sizes: Vec<_> = thumbs.iter().map(|t| (t.width, t.height)).collect();
        assert_eq!(sizes, [(320, 640), (500, 1000)]);
    }

    #[test]
    fn exif_orientation_is_applied() {
        let jpeg = encode(&DynamicImage::new_rgb8(1000, 500), ImageFormat::Jpeg);
        // An APP1 Exif segment right after SOI: one IFD entry, Orientation (0x0112) = 6,
        // "rotate 90° clockwise to display".
        let mut exif = b"Exif\0\0MM\0\x2a\0\0\0\x08\0\x01".to_vec();
        exif.extend_from_slice(&[0x01, 0x12, 0, 3, 0, 0, 0, 1, 0, 6, 0, 0, 0, 0, 0, 0]);
        let mut turned = jpeg[..2].to_vec();
        turned.extend_from_slice(&[0xFF, 0xE1]);
        turned.extend_from_slice(&(exif.len() as u16 + 2).to_be_bytes());
        turned.extend_from_slice(&exif);
        turned.extend_from_slice(&jpeg[2..]);
        let (dims, thumbs) = derive(&turned, ImageFormat::Jpeg).unwrap();
        assert_eq!(dims, (500, 1000), "as displayed");
        let sizes: Vec<_> = thumbs.iter().map(|t| (t.width, t.height)).collect();
        assert_eq!(sizes, [(320, 640), (500, 1000)]);
    }

    #[test]
    fn refusals() {
        let png = encode(&DynamicImage::new_rgb8(64, 64), ImageFormat::Png);
        assert!(matches!(
            derive(&png[..png.len() - 30], ImageFormat::Png),
            Err(Refusal::Undecodable(_))
        ));
        assert!(matches!(
            derive(b"\x89PNG\r\n\x1a\ngarbage", ImageFormat::Png),
            Err(Refusal::Undecodable(_))
        ));
        assert_eq!(scaled(3, 1, 1), 1, "at least one pixel");
        assert_eq!(
            name("0123456789abcdef.png", 320),
            "0123456789abcdef-320.jpg"
        );
    }
}
