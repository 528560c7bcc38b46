/* font.h: the 5x9 bitmap font the figure is measured and rasterized with (ASCII 32..126;
 * anything else draws as '?'). Internal to common/plot/. */
#ifndef SY_PLOT_FONT_H
#define SY_PLOT_FONT_H

#define GLYPH_W 5
#define GLYPH_H 9
#define GLYPH_ADV 6 /* columns per character, including the gap */
#define GLYPH_CAP 7 /* rows above the baseline */

/* The glyph of ch: GLYPH_W x GLYPH_H characters, row by row, '#' = ink. */
const char *sy_glyph(char ch);
/* Pixel width of s drawn at an integer scale (no trailing gap). */
double sy_text_width(const char *s, int scale);

#endif
