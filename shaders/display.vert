#version 330 core
// Full-window quad for the dream display, letterboxed to keep the frame's aspect ratio.

in vec2 position;      // corner of the quad in normalised device coordinates, -1..1
uniform vec2 scale;    // letterbox: fraction of the window's width and height the frame fills

out vec2 uv;           // 0..1 across the frame, (0, 0) = top-left pixel of the numpy image

void main() {
    gl_Position = vec4(position * scale, 0.0, 1.0);
    // numpy rows are top-first and are uploaded as texture rows from t = 0, while
    // GL's y axis points up: flip here so the image's first row lands at the top.
    uv = vec2(position.x * 0.5 + 0.5, 0.5 - position.y * 0.5);
}
