//! The UNet config parser and safetensors weight loader on arbitrary bytes:
//! the first two bytes give the length of a `config.json` text, the rest is a
//! weight file. Anything may fail, with a typed error; nothing may panic.
//! A network that loads runs one forward at the smallest size it accepts.
#![no_main]

use diffinv::unet::{Timesteps, UNet, UNetConfig};
use diffinv::DType;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((len, rest)) = data.split_first_chunk::<2>() else {
        return;
    };
    let len = (u16::from_le_bytes(*len) as usize).min(rest.len());
    let (config, weights) = rest.split_at(len);
    let Ok(config) = UNetConfig::from_json(&String::from_utf8_lossy(config)) else {
        return;
    };
    for dtype in [DType::F32, DType::F16] {
        if let Ok(mut net) = UNet::from_safetensors(config.clone(), weights, dtype) {
            let side = 1 << (config.levels() - 1);
            let dims = [1, config.in_channels, side, side];
            let x = vec![0.5f32; dims.iter().product()];
            let _ = net.forward(&x, dims, Timesteps::Float(&[10.0]));
        }
    }
});
