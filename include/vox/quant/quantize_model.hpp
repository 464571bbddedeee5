#pragma once
// Post-training quantization of a whole network, in place:
//
//   quant::Calibration calibration(model, {.method = quant::CalibrationMethod::minmax});
//   for (const Tensor& x : calibration_windows) model.forward(x);     // observes each layer's input
//   const auto inputs = calibration.inputs();                         // u8 parameters per layer
//   calibration.detach();
//   quant::QuantizedLayers layers = quant::quantize(model, inputs);   // the layers now run in INT8
//   io::save_safetensors(path, quant::quantized_state_dict(model, layers));
//   ...
//   quant::load_quantized_state_dict(fresh_model, io::load_safetensors(path).tensors);
//
// Every convolution, transposed convolution and linear layer (nn::Conv, nn::ConvTranspose,
// nn::Linear) is quantized unless named in keep_float or too narrow for the int8 kernels (see
// QuantizeOptions::min_outputs); norms, activations, softmax and losses stay in float. A layer
// runs in INT8 through its interceptor (nn::Interceptable), so the network's own code is
// unchanged; its float weight stays in the module (the state dict, restore_float).
//
// A batch norm that normalises a quantized convolution's output is folded into it first (its
// scale into the weights, its shift into the bias, from its running statistics), and then passes
// its input through: one INT8 layer instead of a layer and a norm. vox's networks declare each
// batch norm right after its convolution (ResNet's conv1 -> bn1, downsample.0 -> downsample.1);
// batch_norm_folds() pairs them by that order. The network must be in eval mode.
//
// A quantized state dict is the float one with each quantized layer's "weight" replaced by
// "weight_int8" (i8, PyTorch's layout), "weight_scale" (f32 [out channels]), "input_scale" (f32
// [1]) and "input_zero_point" (u8 [1]); a layer with a folded batch norm also has "folded_bias"
// (f32 [out channels]).
#include <functional>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "vox/nn/layers.hpp"
#include "vox/quant/calibration.hpp"
#include "vox/quant/quantized_layer.hpp"

namespace vox::quant {

// A layer that quantization can replace, found in a network.
struct QuantizableLayer {
  std::string name;  // its state_dict prefix, "model.0.conv.unit0.conv"
  LayerSpec spec;
  nn::Interceptable* slot = nullptr;
  Tensor weight, bias;  // the float parameters (shared with the module)
  nn::TorchLayout layout = nn::TorchLayout::same;
};

namespace model_detail {
template <class Layer>
bool add_if(nn::Module& m, const std::string& name, std::vector<QuantizableLayer>& out) {
  auto* layer = dynamic_cast<Layer*>(&m);
  if (!layer) return false;
  QuantizableLayer q;
  q.name = name, q.slot = layer;
  q.weight = layer->weight(), q.bias = layer->bias();
  if constexpr (std::is_same_v<Layer, nn::Linear>) {
    q.spec.kind = LayerKind::linear, q.spec.spatial = 0;
  } else {
    q.layout = nn::TorchLayout::channels_first;
    q.spec.spatial = static_cast<int>(q.weight.rank()) - 2;
    if constexpr (std::is_same_v<Layer, nn::Conv<2>> || std::is_same_v<Layer, nn::Conv<3>>) {
      q.spec.kind = LayerKind::conv, q.spec.conv = layer->options();
    } else {
      q.spec.kind = LayerKind::conv_transpose, q.spec.transpose = layer->options();
    }
  }
  out.push_back(std::move(q));
  return true;
}
inline void collect(nn::Module& m, const std::string& name, std::vector<QuantizableLayer>& out) {
  if (add_if<nn::Conv<3>>(m, name, out) || add_if<nn::Conv<2>>(m, name, out) || add_if<nn::ConvTranspose<3>>(m, name, out) ||
      add_if<nn::ConvTranspose<2>>(m, name, out) || add_if<nn::Linear>(m, name, out))
    return;
  m.visit_children([&](const std::string& child, nn::Module& c) { collect(c, name.empty() ? child : name + "." + child, out); });
}
}  // namespace model_detail

// The network's convolutions, transposed convolutions and linear layers, in forward-declaration
// (state_dict) order.
inline std::vector<QuantizableLayer> quantizable_layers(nn::Module& model) {
  std::vector<QuantizableLayer> out;
  model_detail::collect(model, "", out);
  return out;
}

// A batch norm declared right after a convolution of the same rank, which it normalises.
struct BatchNormFold {
  std::string conv, norm;  // state_dict prefixes
  nn::Interceptable* slot = nullptr;  // the norm's
  // The convolution's weight (output channels on `axis`) with the norm folded in, its folded
  // bias written; with unfold, a folded weight taken back out (folded_bias unused).
  std::function<Tensor(const Tensor& weight, const Tensor& bias, int64_t axis, Tensor* folded_bias, bool unfold)> fold;
};

namespace model_detail {
// w * gamma / sqrt(var + eps) along the output axis, and (b - mean) * gamma / sqrt(var + eps) + beta
// (b = 0 without a bias), in f64; with unfold, the inverse for the weights (channels whose gamma
// is 0 put out beta whatever their weights: 0 there).
template <int D>
Tensor fold_batch_norm(const nn::BatchNorm<D>& bn, const Tensor& weight, const Tensor& bias, int64_t axis, Tensor* folded_bias, bool unfold) {
  auto host = [](const Tensor& t) { return t.detach().to(DType::f64).to(Device::cpu()).contiguous(); };
  const Tensor gamma = host(bn.weight()), beta = host(bn.bias()), mean = host(bn.running_mean()), var = host(bn.running_var());
  const int64_t channels = gamma.numel();
  std::vector<double> factor(static_cast<size_t>(channels));
  for (int64_t c = 0; c < channels; ++c) factor[static_cast<size_t>(c)] = gamma.data<double>()[c] / std::sqrt(var.data<double>()[c] + bn.eps());
  Tensor w = host(weight);
  const int64_t a = axis < 0 ? axis + w.rank() : axis;
  VOX_CHECK(w.size(a) == channels, "quant::fold_batch_norm", "a batch norm of ", channels, " channels after a layer of ", w.size(a), " outputs");
  int64_t inner = 1;
  for (int64_t k = a + 1; k < w.rank(); ++k) inner *= w.size(k);
  double* v = w.data<double>();
  for (int64_t o = 0; o < w.numel() / (channels * inner); ++o)
    for (int64_t c = 0; c < channels; ++c)
      for (int64_t i = 0; i < inner; ++i) {
        double& x = v[(o * channels + c) * inner + i];
        const double f = factor[static_cast<size_t>(c)];
        x = unfold ? (f != 0 ? x / f : 0.0) : x * f;
      }
  if (folded_bias) {
    const Tensor b = bias.defined() ? host(bias) : zeros({channels}, DType::f64);
    Tensor out = empty({channels}, DType::f32);
    for (int64_t c = 0; c < channels; ++c)
      out.data<float>()[c] = static_cast<float>((b.data<double>()[c] - mean.data<double>()[c]) * factor[static_cast<size_t>(c)] + beta.data<double>()[c]);
    *folded_bias = out;
  }
  return w.to(weight.dtype());
}

template <int D>
bool add_fold(nn::Module* previous, const std::string& previous_name, nn::Module& m, const std::string& name, std::vector<BatchNormFold>& out) {
  auto* bn = dynamic_cast<nn::BatchNorm<D>*>(&m);
  if (!bn || !dynamic_cast<nn::Conv<D>*>(previous)) return false;
  out.push_back({previous_name, name, bn, [bn, name](const Tensor& w, const Tensor& b, int64_t axis, Tensor* folded_bias, bool unfold) {
                   VOX_CHECK(unfold || !bn->is_training(), "quant::quantize", "batch norm ", name,
                             " is in training mode, its statistics not yet fixed; call eval() on the network first");
                   return fold_batch_norm(*bn, w, b, axis, folded_bias, unfold);
                 }});
  return true;
}
inline void collect_folds(nn::Module& m, const std::string& name, std::vector<BatchNormFold>& out) {
  nn::Module* previous = nullptr;
  std::string previous_name;
  m.visit_children([&](const std::string& child, nn::Module& c) {
    const std::string full = name.empty() ? child : name + "." + child;
    if (!add_fold<3>(previous, previous_name, c, full, out) && !add_fold<2>(previous, previous_name, c, full, out)) collect_folds(c, full, out);
    previous = &c, previous_name = full;
  });
}
}  // namespace model_detail

// The batch norms quantization folds, by the convolution each follows.
inline std::map<std::string, BatchNormFold> batch_norm_folds(nn::Module& model) {
  std::vector<BatchNormFold> found;
  model_detail::collect_folds(model, "", found);
  std::map<std::string, BatchNormFold> out;
  for (BatchNormFold& f : found) out[f.conv] = std::move(f);
  return out;
}

// Observes the input of every quantizable layer while it exists; the network runs in float.
class Calibration {
 public:
  explicit Calibration(nn::Module& model, CalibrationOptions options = {}) : layers_(quantizable_layers(model)) {
    for (const QuantizableLayer& layer : layers_) {
      auto observer = std::make_shared<RangeObserver>(options);
      observers_[layer.name] = observer;
      layer.slot->set_interceptor([observer](const Tensor& x, const std::function<Tensor(const Tensor&)>& own) {
        const Tensor v = x.detach().to(DType::f32).to(Device::cpu()).contiguous();
        observer->observe(v.data<float>(), v.numel());
        return own(x);
      });
    }
  }
  ~Calibration() { detach(); }
  Calibration(const Calibration&) = delete;
  Calibration& operator=(const Calibration&) = delete;

  // Removes the observers (the network is as it was).
  void detach() {
    for (const QuantizableLayer& layer : layers_) layer.slot->set_interceptor({});
    layers_.clear();
  }
  // Each layer's calibrated input range.
  std::map<std::string, std::pair<float, float>> ranges() const {
    std::map<std::string, std::pair<float, float>> out;
    for (const auto& [name, observer] : observers_) {
      VOX_CHECK(observer->batches() > 0, "quant::Calibration", "layer ", name, " saw no calibration data: did the forward pass run?");
      out[name] = observer->range();
    }
    return out;
  }
  // Each layer's input parameters.
  std::map<std::string, ActivationParams> inputs() const {
    std::map<std::string, ActivationParams> out;
    for (const auto& [name, r] : ranges()) out[name] = activation_params(r.first, r.second);
    return out;
  }

 private:
  std::vector<QuantizableLayer> layers_;
  std::map<std::string, std::shared_ptr<RangeObserver>> observers_;
};

struct QuantizeOptions {
  std::set<std::string> keep_float;  // layer names left in float
  int weight_bits = 0;               // 0: what this CPU's int8 kernel takes (kernels::cpu::int8_weight_bits())
  // Convolutions with fewer outputs per group stay in float. 0: automatic: none where the
  // vpdpbusd kernels run (they have a kernel for narrow heads); elsewhere those with fewer than 5,
  // which the column-buffer kernels would spread over 1 to 4 of their 16 lanes, slower than the
  // f32 planar kernels.
  int64_t min_outputs = 0;
  bool fold_batch_norms = true;  // fold each batch norm into the quantized convolution before it
};

// The outputs per group of a layer: what fills the int8 GEMM's lanes.
inline int64_t outputs_per_group(const QuantizableLayer& layer) {
  const Shape& w = layer.weight.shape();
  return layer.spec.kind == LayerKind::conv_transpose ? w.back() : w[0] / layer.spec.groups();
}
// True where quantize() leaves the layer in float for its few outputs.
inline bool stays_float_for_speed(const QuantizableLayer& layer, const QuantizeOptions& options = {}) {
  if (layer.spec.kind == LayerKind::linear) return false;
  const int64_t outputs = outputs_per_group(layer);
  if (options.min_outputs > 0) return outputs < options.min_outputs;
  return kernels::cpu::int8_kernel() != kernels::cpu::Int8Kernel::vnni && outputs < 5;
}

using QuantizedLayers = std::map<std::string, std::shared_ptr<QuantizedLayer>>;

// A folded batch norm: its input goes through unchanged.
inline void pass_through(nn::Interceptable& norm) {
  norm.set_interceptor([](const Tensor& x, const std::function<Tensor(const Tensor&)>&) { return x; });
}

// Runs `layer` through `q` from now on.
inline void install(const QuantizableLayer& layer, std::shared_ptr<QuantizedLayer> q) {
  layer.slot->set_interceptor([q = std::move(q)](const Tensor& x, const std::function<Tensor(const Tensor&)>&) { return q->forward(x); });
}

// Runs `layer` through `q` and, where q has a batch norm folded in, passes that norm through: one
// layer in INT8, the rest of the network as it is (the sensitivity report's single layers).
inline void install_alone(nn::Module& model, const QuantizableLayer& layer, std::shared_ptr<QuantizedLayer> q) {
  if (!q->folded_batch_norm().empty()) pass_through(*batch_norm_folds(model).at(layer.name).slot);
  install(layer, std::move(q));
}

// Quantizes every quantizable layer that has input parameters and is not kept in float.
inline QuantizedLayers quantize(nn::Module& model, const std::map<std::string, ActivationParams>& inputs, const QuantizeOptions& options = {}) {
  const int bits = options.weight_bits ? options.weight_bits : kernels::cpu::int8_weight_bits();
  const std::map<std::string, BatchNormFold> folds = options.fold_batch_norms ? batch_norm_folds(model) : std::map<std::string, BatchNormFold>{};
  QuantizedLayers out;
  for (const QuantizableLayer& layer : quantizable_layers(model)) {
    if (options.keep_float.count(layer.name) || stays_float_for_speed(layer, options)) continue;
    const auto it = inputs.find(layer.name);
    VOX_CHECK(it != inputs.end(), "quant::quantize", "layer ", layer.name, " has no calibrated input parameters");
    Tensor w = layer.weight.detach().to(DType::f32).to(Device::cpu());
    Tensor b = layer.bias.defined() ? layer.bias.detach().to(DType::f32).to(Device::cpu()) : Tensor();
    const auto fold = folds.find(layer.name);
    if (fold != folds.end()) {
      Tensor folded_bias;
      w = fold->second.fold(w, b, layer.spec.channel_axis(), &folded_bias, false);
      b = folded_bias;
    }
    auto q = std::make_shared<QuantizedLayer>(layer.spec, quantize_weight(w, layer.spec.channel_axis(), bits, layer.spec.groups()), b,
                                              it->second);
    if (fold != folds.end()) q->set_folded_batch_norm(fold->second.norm), pass_through(*fold->second.slot);
    install(layer, q);
    out[layer.name] = std::move(q);
  }
  for (const std::string& name : options.keep_float) {
    bool found = false;
    for (const QuantizableLayer& layer : quantizable_layers(model)) found = found || layer.name == name;
    VOX_CHECK(found, "quant::quantize", "keep_float names \"", name, "\", which is not a convolution or linear layer of the network");
  }
  return out;
}

// Returns every layer to float.
inline void restore_float(nn::Module& model) {
  for (const QuantizableLayer& layer : quantizable_layers(model)) layer.slot->set_interceptor({});
  for (const auto& [conv, fold] : batch_norm_folds(model)) fold.slot->set_interceptor({});
}

// The state dict of a network quantized by `layers` (see the top of this file).
inline std::map<std::string, Tensor> quantized_state_dict(nn::Module& model, const QuantizedLayers& layers) {
  std::map<std::string, Tensor> state = model.state_dict();
  for (const QuantizableLayer& layer : quantizable_layers(model)) {
    const auto it = layers.find(layer.name);
    if (it == layers.end()) continue;
    const QuantizedLayer& q = *it->second;
    state.erase(layer.name + ".weight");
    const Tensor& values = q.weight().values;
    state[layer.name + ".weight_int8"] = layer.layout == nn::TorchLayout::channels_first ? to_channels_first(values) : values;
    state[layer.name + ".weight_scale"] = q.weight().scale;
    state[layer.name + ".input_scale"] = full({1}, q.input().scale, DType::f32);
    state[layer.name + ".input_zero_point"] = full({1}, q.input().zero_point, DType::u8);
    if (!q.folded_batch_norm().empty()) state[layer.name + ".folded_bias"] = q.bias();
  }
  return state;
}

// Loads a state dict written by quantized_state_dict into a float network of the same
// architecture: its quantized layers run in INT8 from then on, with their weights (as floats)
// set to the dequantized values. Every problem (a missing scale, a wrong dtype or shape) is a
// vox::Error that names the tensor. Returns the quantized layers.
inline QuantizedLayers load_quantized_state_dict(nn::Module& model, std::map<std::string, Tensor> state) {
  const char* op = "quant::load_quantized_state_dict";
  const std::map<std::string, BatchNormFold> folds = batch_norm_folds(model);
  QuantizedLayers out;
  for (const QuantizableLayer& layer : quantizable_layers(model)) {
    const std::string w_key = layer.name + ".weight_int8";
    const auto w_it = state.find(w_key);
    if (w_it == state.end()) continue;
    auto take = [&](const std::string& suffix, DType dtype) {
      const std::string key = layer.name + "." + suffix;
      const auto it = state.find(key);
      VOX_CHECK(it != state.end(), op, "quantized layer ", layer.name, " lacks \"", key, "\"");
      VOX_CHECK(it->second.dtype() == dtype, op, "\"", key, "\" has dtype ", dtype_name(it->second.dtype()), ", expected ", dtype_name(dtype));
      Tensor t = it->second.contiguous();
      state.erase(it);
      return t;
    };
    Tensor values = take("weight_int8", DType::i8);
    const Shape expected = layer.layout == nn::TorchLayout::channels_first ? to_channels_first(layer.weight.detach()).shape() : layer.weight.shape();
    VOX_CHECK(values.shape() == expected, op, "\"", w_key, "\" has shape ", values.shape(), ", expected ", expected);
    if (layer.layout == nn::TorchLayout::channels_first) values = from_channels_first(values).contiguous();
    const Tensor scale = take("weight_scale", DType::f32), input_scale = take("input_scale", DType::f32);
    const Tensor zero_point = take("input_zero_point", DType::u8);
    VOX_CHECK(input_scale.numel() == 1 && zero_point.numel() == 1, op, "\"", layer.name, ".input_scale\" and \".input_zero_point\" hold one value each, got ",
              input_scale.numel(), " and ", zero_point.numel());
    const ActivationParams input{input_scale.data<float>()[0], int32_t{zero_point.data<uint8_t>()[0]}};
    const auto b = state.find(layer.name + ".bias");
    Tensor bias;
    const auto fold = state.count(layer.name + ".folded_bias") ? folds.find(layer.name) : folds.end();
    if (state.count(layer.name + ".folded_bias")) {
      VOX_CHECK(fold != folds.end(), op, "\"", layer.name, ".folded_bias\" names a folded batch norm, but no batch norm follows ", layer.name);
      bias = take("folded_bias", DType::f32);
    } else if (layer.bias.defined()) {
      VOX_CHECK(b != state.end(), op, "quantized layer ", layer.name, " lacks \"", layer.name, ".bias\"");
      VOX_CHECK(b->second.dtype() == DType::f32, op, "\"", layer.name, ".bias\" has dtype ", dtype_name(b->second.dtype()), ", expected f32");
      bias = b->second;
    }
    auto q = std::make_shared<QuantizedLayer>(layer.spec, QuantizedWeight{values, scale}, bias, input);
    const Tensor dequantized = q->dequantized_weight();
    if (fold != folds.end()) q->set_folded_batch_norm(fold->second.norm);
    state[layer.name + ".weight"] = layer.layout == nn::TorchLayout::channels_first ? to_channels_first(dequantized) : dequantized;
    out[layer.name] = std::move(q);
  }
  VOX_CHECK(!out.empty(), op, "the state dict holds no quantized layer (no \"*.weight_int8\"): it is not an INT8 model");
  model.load_state_dict(state);
  NoGradGuard no_grad;
  for (const QuantizableLayer& layer : quantizable_layers(model)) {
    const auto it = out.find(layer.name);
    if (it == out.end()) continue;
    if (!it->second->folded_batch_norm().empty()) {  // the float weight as it was before folding (the norm's statistics now loaded)
      const BatchNormFold& fold = folds.at(layer.name);
      layer.weight.detach().copy_from(fold.fold(layer.weight, Tensor(), layer.spec.channel_axis(), nullptr, true));
      pass_through(*fold.slot);
    }
    install(layer, it->second);
  }
  return out;
}

}  // namespace vox::quant
