//! A 3×5 pixel font, drawn at 2× scale: enough lettering for `map`'s
//! title and legend (upper-case letters, digits and a little punctuation;
//! lower case is drawn upper case, anything else as a space).

/// Pixels per font pixel.
pub const SCALE: usize = 2;
/// Horizontal advance of one character, in image pixels.
pub const ADVANCE: usize = 4 * SCALE;
/// Height of a line of text, in image pixels.
pub const HEIGHT: usize = 5 * SCALE;

/// The glyph of `c`: five rows of three bits (bit 2 is the left column).
fn glyph(c: char) -> [u8; 5] {
    match c.to_ascii_uppercase() {
        '0' => [7, 5, 5, 5, 7],
        '1' => [2, 6, 2, 2, 7],
        '2' => [7, 1, 7, 4, 7],
        '3' => [7, 1, 7, 1, 7],
        '4' => [5, 5, 7, 1, 1],
        '5' => [7, 4, 7, 1, 7],
        '6' => [7, 4, 7, 5, 7],
        '7' => [7, 1, 1, 1, 1],
        '8' => [7, 5, 7, 5, 7],
        '9' => [7, 5, 7, 1, 7],
        'A' => [2, 5, 7, 5, 5],
        'B' => [6, 5, 6, 5, 6],
        'C' => [3, 4, 4, 4, 3],
        'D' => [6, 5, 5, 5, 6],
        'E' => [7, 4, 6, 4, 7],
        'F' => [7, 4, 6, 4, 4],
        'G' => [3, 4, 5, 5, 3],
        'H' => [5, 5, 7, 5, 5],
        'I' => [7, 2, 2, 2, 7],
        'J' => [1, 1, 1, 5, 2],
        'K' => [5, 5, 6, 5, 5],
        'L' => [4, 4, 4, 4, 7],
        'M' => [5, 7, 7, 5, 5],
        'N' => [6, 5, 5, 5, 5],
        'O' => [2, 5, 5, 5, 2],
        'P' => [6, 5, 6, 4, 4],
        'Q' => [2, 5, 5, 6, 3],
        'R' => [6, 5, 6, 5, 5],
        'S' => [3, 4, 2, 1, 6],
        'T' => [7, 2, 2, 2, 2],
        'U' => [5, 5, 5, 5, 7],
        'V' => [5, 5, 5, 5, 2],
        'W' => [5, 5, 7, 7, 5],
        'X' => [5, 5, 2, 5, 5],
        'Y' => [5, 5, 2, 2, 2],
        'Z' => [7, 1, 2, 4, 7],
        '.' => [0, 0, 0, 0, 2],
        ',' => [0, 0, 0, 2, 4],
        ':' => [0, 2, 0, 2, 0],
        '%' => [5, 1, 2, 4, 5],
        '=' => [0, 7, 0, 7, 0],
        '-' => [0, 0, 7, 0, 0],
        '/' => [1, 1, 2, 4, 4],
        '(' => [1, 2, 2, 2, 1],
        ')' => [4, 2, 2, 2, 4],
        _ => [0; 5],
    }
}

/// Draws `text` with its top-left corner at (`x`, `y`) in an image of
/// `width` pixels per row; pixels outside the image are skipped. Returns
/// the x just past the text.
pub fn draw(pixels: &mut [[u8; 3]], width: usize, x: usize, y: usize, text: &str, colour: [u8; 3]) -> usize {
    let height = pixels.len() / width.max(1);
    let mut at = x;
    for c in text.chars() {
        for (row, bits) in glyph(c).iter().enumerate() {
            for col in 0..3 {
                if bits >> (2 - col) & 1 == 0 {
                    continue;
                }
                for dy in 0..SCALE {
                    for dx in 0..SCALE {
                        let (px, py) = (at + col * SCALE + dx, y + row * SCALE + dy);
                        if px < width && py < height {
                            pixels[py * width + px] = colour;
                        }
                    }
                }
            }
        }
        at += ADVANCE;
    }
    at
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_is_drawn_inside_the_image_only() {
        let mut px = vec![[0u8; 3]; 20 * 12];
        let end = draw(&mut px, 20, 0, 0, "1%", [255; 3]);
        assert_eq!(end, 2 * ADVANCE);
        // '1' has its top-middle pixel set: (2..4, 0..2) at 2x.
        assert_eq!(px[2], [255; 3]);
        assert_eq!(px[0], [0; 3]);
        // Off the right edge: nothing panics, nothing wraps.
        draw(&mut px, 20, 18, 8, "WWW", [7; 3]);
        assert!(px.iter().filter(|p| **p == [7; 3]).count() > 0);
    }
}
