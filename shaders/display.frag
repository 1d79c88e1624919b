#version 330 core
// Crossfade camera <-> dream, then brightness, contrast and saturation.
// The texture holds both pictures side by side: dream in the left half, camera in the right.

in vec2 uv;
uniform sampler2D frame;    // (H, 2W) RGB: [dream | camera]
uniform float mix_amount;   // 0 = camera, 1 = dream
uniform float brightness;   // added to every channel, -1..1
uniform float contrast;     // gain around mid-grey, 0..2 (1 = unchanged)
uniform float saturation;   // gain away from the pixel's luma, 0..2 (0 = grey, 1 = unchanged)

out vec4 color;

// Rec. 709 luma weights: how bright each primary looks to the eye.
const vec3 LUMA = vec3(0.2126, 0.7152, 0.0722);

void main() {
    // Keep each half's samples half a texel inside its own half, so linear filtering
    // never bleeds the camera's first column into the dream's last one (or back).
    float half_texel = 0.5 / float(textureSize(frame, 0).x);
    float u = clamp(uv.x * 0.5, half_texel, 0.5 - half_texel);
    vec3 dream = texture(frame, vec2(u, uv.y)).rgb;
    vec3 camera = texture(frame, vec2(u + 0.5, uv.y)).rgb;

    vec3 rgb = mix(camera, dream, mix_amount);
    rgb = (rgb - 0.5) * contrast + 0.5 + brightness;
    rgb = mix(vec3(dot(rgb, LUMA)), rgb, saturation);
    color = vec4(clamp(rgb, 0.0, 1.0), 1.0);
}
