#pragma once
// Structured channel pruning: output channels removed from the network, not masked, with every
// tensor that reads them rewritten, so that the smaller network runs faster.
//
// A channel group is a set of channels that must go together: the outputs of the layers that
// produce them (two layers whose outputs are summed, as a residual unit's branches, share one
// group), and every place that reads them: the next layers' input channels, the norms' channel
// counts and parameters, and a U-Net's skip concatenation, where an encoder channel is also a
// channel of the decoder's concatenated input. Channels are ranked by the L1 or L2 norm of their
// producing filters, within each group or globally (each group's norms divided by their mean, so
// that layers of different scales compare); each group keeps at least one channel.
//
//   auto groups = quant::channel_groups(unet);            // MonaiUNet, UNet3D or ResNet3D
//   quant::PrunePlan plan = quant::plan_pruning(groups, {.amount = 0.3, .global = true});
//   quant::apply_pruning(groups, plan);                   // the network is now smaller
//
// The network with a group's pruned channels zeroed (their filters, biases and norm parameters)
// computes what the pruned network computes: tests check that to 1e-5.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <functional>
#include <map>
#include <numeric>
#include <string>
#include <vector>

#include "vox/nn/models/monai_unet.hpp"
#include "vox/nn/models/resnet.hpp"
#include "vox/nn/models/unet3d.hpp"

namespace vox::quant {

// Channels [offset, offset + channels) of a tensor's axis.
struct ChannelSlice {
  Tensor* tensor = nullptr;
  int64_t axis = 0;
  int64_t offset = 0;
};

struct ChannelGroup {
  std::string name;  // the first producing layer
  int64_t channels = 0;
  std::vector<ChannelSlice> producers;  // the filters whose norms rank the channels (weights' output axes)
  std::vector<ChannelSlice> members;    // every slice indexed by the group: producers, their biases, consumers' inputs
  std::vector<nn::InstanceNorm<3>*> norms;  // instance norms over the group's channels (their count changes)
};

enum class FilterNorm { l1, l2 };

struct PruneOptions {
  double amount = 0.3;  // the share of each group's channels (or of all channels, with global) removed
  FilterNorm norm = FilterNorm::l1;
  bool global = false;  // rank all groups' channels together
};

// The kept channels of each group, by group index, in increasing order.
using PrunePlan = std::vector<std::vector<int64_t>>;

namespace prune_detail {

inline std::map<std::string, nn::Module*> modules_by_name(nn::Module& root) {
  std::map<std::string, nn::Module*> out;
  std::function<void(const std::string&, nn::Module&)> walk = [&](const std::string& name, nn::Module& m) {
    out[name] = &m;
    m.visit_children([&](const std::string& child, nn::Module& c) { walk(name.empty() ? child : name + "." + child, c); });
  };
  walk("", root);
  return out;
}

// The network's tensors by state_dict name, and its modules, for assembling groups.
struct Parts {
  std::map<std::string, Tensor*> tensors;
  std::map<std::string, nn::Module*> modules;
  explicit Parts(nn::Module& m) : modules(modules_by_name(m)) {
    for (const auto& list : {m.named_parameters(), m.named_buffers()})
      for (const auto& t : list) tensors[t.name] = t.tensor;
  }
  bool has(const std::string& name) const { return tensors.count(name) != 0; }
  Tensor* at(const std::string& name) const {
    const auto it = tensors.find(name);
    VOX_CHECK(it != tensors.end(), "quant::channel_groups", "the network has no \"", name, "\"");
    return it->second;
  }
  nn::InstanceNorm<3>* instance_norm(const std::string& name) const {
    const auto it = modules.find(name);
    auto* norm = it == modules.end() ? nullptr : dynamic_cast<nn::InstanceNorm<3>*>(it->second);
    VOX_CHECK(norm != nullptr, "quant::channel_groups", "\"", name, "\" is not an instance norm; only MONAI's instance-norm U-Net is supported");
    return norm;
  }
};

// A convolution's outputs as producers (weight axis 0, bias), or a transposed convolution's (its
// last axis).
inline void add_producer(ChannelGroup& g, const Parts& p, const std::string& layer, bool transposed) {
  Tensor* w = p.at(layer + ".weight");
  const ChannelSlice out{w, transposed ? w->rank() - 1 : 0, 0};
  g.producers.push_back(out);
  g.members.push_back(out);
  if (p.has(layer + ".bias")) g.members.push_back({p.at(layer + ".bias"), 0, 0});
}
// A layer's input channels [offset, offset + channels): a convolution's last weight axis, a
// transposed convolution's first.
inline void add_consumer(ChannelGroup& g, const Parts& p, const std::string& layer, bool transposed, int64_t offset = 0) {
  Tensor* w = p.at(layer + ".weight");
  g.members.push_back({w, transposed ? 0 : w->rank() - 1, offset});
}

inline std::vector<double> filter_norms(const ChannelGroup& g, FilterNorm norm) {
  std::vector<double> out(static_cast<size_t>(g.channels), 0.0);
  for (const ChannelSlice& s : g.producers) {
    const Tensor t = s.tensor->detach().to(DType::f64).contiguous();
    const Shape& shape = t.shape();
    const int64_t axis = s.axis < 0 ? s.axis + shape.size() : s.axis;
    int64_t inner = 1;
    for (int64_t a = axis + 1; a < shape.size(); ++a) inner *= shape[a];
    const int64_t size = shape[axis], outer = t.numel() / (size * inner);
    const double* v = t.data<double>();
    for (int64_t o = 0; o < outer; ++o)
      for (int64_t c = 0; c < g.channels; ++c)
        for (int64_t i = 0; i < inner; ++i) {
          const double x = v[(o * size + s.offset + c) * inner + i];
          out[static_cast<size_t>(c)] += norm == FilterNorm::l1 ? std::fabs(x) : x * x;
        }
  }
  if (norm == FilterNorm::l2)
    for (double& x : out) x = std::sqrt(x);
  return out;
}

// t with only the `keep` indices of `axis` (contiguous, any dtype).
inline Tensor select(const Tensor& t, int64_t axis, const std::vector<int64_t>& keep) {
  const Tensor c = t.detach().contiguous();
  Shape shape = c.shape();
  int64_t inner = 1;
  for (int64_t a = axis + 1; a < shape.size(); ++a) inner *= shape[a];
  const int64_t size = shape[axis], outer = c.numel() / std::max<int64_t>(size * inner, 1);
  shape[static_cast<size_t>(axis)] = static_cast<int64_t>(keep.size());
  Tensor out = empty(shape, c.dtype());
  const size_t bytes = dtype_size(c.dtype()) * static_cast<size_t>(inner);
  const auto* src = static_cast<const char*>(c.raw_data());
  auto* dst = static_cast<char*>(out.raw_data());
  for (int64_t o = 0; o < outer; ++o)
    for (size_t k = 0; k < keep.size(); ++k)
      std::memcpy(dst + (o * static_cast<int64_t>(keep.size()) + static_cast<int64_t>(k)) * static_cast<int64_t>(bytes),
                  src + (o * size + keep[k]) * static_cast<int64_t>(bytes), bytes);
  return out;
}

}  // namespace prune_detail

// The channel groups of MONAI's U-Net with residual units (num_res_units >= 1) and instance
// norm: per level, the down unit's inner subunits, its output (the last subunit and the residual
// conv, read by the next level and by the skip concatenation), the bottom unit's likewise, and
// each up path's output (the transposed conv and its residual unit, whose identity branch ties
// them) but the top one, which gives the classes.
inline std::vector<ChannelGroup> channel_groups(nn::models::MonaiUNet& net) {
  using namespace prune_detail;
  const nn::models::MonaiUNetConfig& c = net.config();
  VOX_CHECK(c.num_res_units >= 1 && c.norm == nn::models::NormKind::instance, "quant::channel_groups",
            "supports MONAI U-Nets with residual units and instance norm, got num_res_units ", c.num_res_units);
  const Parts p(net);
  const size_t levels = c.channels.size();
  std::vector<ChannelGroup> groups;
  // a residual unit at `unit` (subunits unit0.. unitN-1, residual conv) whose output group gets
  // consumers afterwards; returns that output group's index
  auto residual_unit = [&](const std::string& unit, int64_t channels) {
    const int64_t subunits = c.num_res_units;
    for (int64_t s = 0; s + 1 < subunits; ++s) {
      ChannelGroup g{unit + ".conv.unit" + std::to_string(s) + ".conv", channels};
      add_producer(g, p, g.name, false);
      add_consumer(g, p, unit + ".conv.unit" + std::to_string(s + 1) + ".conv", false);
      g.norms.push_back(p.instance_norm(unit + ".conv.unit" + std::to_string(s) + ".adn.N"));
      groups.push_back(g);
    }
    const std::string last = unit + ".conv.unit" + std::to_string(subunits - 1);
    VOX_CHECK(p.has(unit + ".residual.weight"), "quant::channel_groups", unit,
              " has an identity residual branch: its output is tied to its input, which is not supported");
    ChannelGroup out{last + ".conv", channels};
    add_producer(out, p, last + ".conv", false);
    add_producer(out, p, unit + ".residual", false);
    out.norms.push_back(p.instance_norm(last + ".adn.N"));
    groups.push_back(out);
    return groups.size() - 1;
  };
  std::string prefix = "model";
  std::vector<std::pair<size_t, std::string>> up_groups;  // (group, the level above's transposed conv) for the decoder outputs
  for (size_t level = 0; level + 1 < levels; ++level) {
    const int64_t ch = c.channels[level];
    const size_t down = residual_unit(prefix + ".0", ch);
    const std::string up_conv = prefix + ".2.0.conv", sub = prefix + ".1.submodule";
    add_consumer(groups[down], p, up_conv, true, 0);  // the skip: [encoder, decoder] into the up path
    if (level + 2 < levels) {
      add_consumer(groups[down], p, sub + ".0.conv.unit0.conv", false);
      add_consumer(groups[down], p, sub + ".0.residual", false);
    } else {  // the bottom unit
      add_consumer(groups[down], p, sub + ".conv.unit0.conv", false);
      add_consumer(groups[down], p, sub + ".residual", false);
      const size_t bottom = residual_unit(sub, c.channels[level + 1]);
      add_consumer(groups[bottom], p, up_conv, true, ch);
    }
    if (level > 0) {  // this level's up path output, read by the level above's transposed conv after its encoder channels
      ChannelGroup g{up_conv, c.channels[level - 1]};
      add_producer(g, p, up_conv, true);
      add_producer(g, p, prefix + ".2.1.conv.unit0.conv", false);
      add_consumer(g, p, prefix + ".2.1.conv.unit0.conv", false);
      g.norms.push_back(p.instance_norm(prefix + ".2.0.adn.N"));
      g.norms.push_back(p.instance_norm(prefix + ".2.1.conv.unit0.adn.N"));
      groups.push_back(g);
      up_groups.push_back({groups.size() - 1, prefix});
    }
    prefix = sub;
  }
  // the up path of level L feeds level L - 1's transposed conv, after that level's own channels
  for (const auto& [g, level_prefix] : up_groups) {
    const std::string above = level_prefix.substr(0, level_prefix.size() - std::string(".1.submodule").size());
    add_consumer(groups[g], p, above + ".2.0.conv", true, groups[g].channels);
  }
  return groups;
}

// The channel groups of the MLPerf 3D U-Net: each conv block's first conv (read by its second),
// each block's output (read by the next block and, through the skip, by its up-sampling block's
// first conv after the up-sampled channels), and each transposed conv's output (read by its
// block's first conv before the skip's channels). Affine instance norms lose the channels' scales
// and shifts too.
inline std::vector<ChannelGroup> channel_groups(nn::models::UNet3D& net) {
  using namespace prune_detail;
  const Parts p(net);
  const std::vector<int64_t>& f = net.config().filters;
  const size_t levels = f.size();
  std::vector<ChannelGroup> groups;
  auto norm_of = [&](ChannelGroup& g, const std::string& norm) {
    g.members.push_back({p.at(norm + ".weight"), 0, 0});
    g.members.push_back({p.at(norm + ".bias"), 0, 0});
    g.norms.push_back(p.instance_norm(norm));
  };
  // a [conv, norm, ReLU] pair at `block`; returns its output group's index
  auto double_conv = [&](const std::string& block, int64_t channels) {
    ChannelGroup first{block + ".conv1.0", channels};
    add_producer(first, p, first.name, false);
    norm_of(first, block + ".conv1.1");
    add_consumer(first, p, block + ".conv2.0", false);
    groups.push_back(first);
    ChannelGroup out{block + ".conv2.0", channels};
    add_producer(out, p, out.name, false);
    norm_of(out, block + ".conv2.1");
    groups.push_back(out);
    return groups.size() - 1;
  };
  // the encoder: skip s is the input block (s = 0) or downsample.(s - 1); up-sampling block
  // L - 1 - s reads it after its up-sampled channels
  std::vector<size_t> skips;
  for (size_t s = 0; s < levels; ++s) skips.push_back(double_conv(s == 0 ? "input_block" : "downsample." + std::to_string(s - 1), f[s]));
  for (size_t s = 0; s < levels; ++s) {
    ChannelGroup& g = groups[skips[s]];
    add_consumer(g, p, s + 1 < levels ? "downsample." + std::to_string(s) + ".conv1.0" : "bottleneck.conv1.0", false);
    add_consumer(g, p, "upsample." + std::to_string(levels - 1 - s) + ".conv1.0", false, g.channels);
  }
  size_t previous = double_conv("bottleneck", f.back());
  for (size_t j = 0; j < levels; ++j) {
    const std::string up = "upsample." + std::to_string(j);
    add_consumer(groups[previous], p, up + ".upsample_conv.0", true);
    ChannelGroup upsampled{up + ".upsample_conv.0", f[levels - 1 - j]};
    add_producer(upsampled, p, upsampled.name, true);
    add_consumer(upsampled, p, up + ".conv1.0", false, 0);
    groups.push_back(upsampled);
    previous = double_conv(up, f[levels - 1 - j]);
  }
  add_consumer(groups[previous], p, "output.conv.0", false);
  return groups;
}

// The channel groups of a 3-D ResNet with convolution shortcuts (MONAI's default, B): each
// block's inner convs (conv1, and conv2 of a bottleneck), and per run of identity shortcuts one
// group of summed outputs: the stem (or a block's downsample conv) and every following block's
// last conv, read by each block's conv1, the next downsample conv and the classifier. Batch norms
// lose the channels' scales, shifts and running statistics.
inline std::vector<ChannelGroup> channel_groups(nn::models::ResNet3D& net) {
  using namespace prune_detail;
  const nn::models::ResNetConfig& c = net.config();
  VOX_CHECK(c.shortcut == nn::models::ResNetShortcut::B, "quant::channel_groups",
            "supports ResNets with convolution shortcuts (B); shortcut A pads with zero channels, tied to its input's count");
  const Parts p(net);
  auto batch_norm_of = [&](ChannelGroup& g, const std::string& norm) {
    for (const char* tensor : {".weight", ".bias", ".running_mean", ".running_var"}) g.members.push_back({p.at(norm + tensor), 0, 0});
  };
  auto outputs = [&](const std::string& conv) { return p.at(conv + ".weight")->size(0); };
  std::vector<ChannelGroup> groups;
  ChannelGroup summed{"conv1", outputs("conv1")};  // the stem's output, until a downsample conv starts a new sum
  add_producer(summed, p, "conv1", false);
  batch_norm_of(summed, "bn1");
  const int convs = c.block == nn::models::ResNetBlockKind::basic ? 2 : 3;
  for (size_t l = 0; l < c.layers.size(); ++l)
    for (int b = 0; b < c.layers[l]; ++b) {
      const std::string block = "layer" + std::to_string(l + 1) + "." + std::to_string(b);
      add_consumer(summed, p, block + ".conv1", false);
      if (p.has(block + ".downsample.0.weight")) {
        add_consumer(summed, p, block + ".downsample.0", false);
        groups.push_back(summed);
        summed = ChannelGroup{block + ".downsample.0", outputs(block + ".downsample.0")};
        add_producer(summed, p, block + ".downsample.0", false);
        batch_norm_of(summed, block + ".downsample.1");
      }
      for (int i = 1; i < convs; ++i) {
        const std::string conv = block + ".conv" + std::to_string(i);
        ChannelGroup inner{conv, outputs(conv)};
        add_producer(inner, p, conv, false);
        batch_norm_of(inner, block + ".bn" + std::to_string(i));
        add_consumer(inner, p, block + ".conv" + std::to_string(i + 1), false);
        groups.push_back(inner);
      }
      add_producer(summed, p, block + ".conv" + std::to_string(convs), false);
      batch_norm_of(summed, block + ".bn" + std::to_string(convs));
    }
  if (p.has("fc.weight")) add_consumer(summed, p, "fc", false);
  groups.push_back(summed);
  return groups;
}

// The channel groups of any network above, by its type.
inline std::vector<ChannelGroup> channel_groups(nn::Module& net) {
  if (auto* unet = dynamic_cast<nn::models::MonaiUNet*>(&net)) return channel_groups(*unet);
  if (auto* unet = dynamic_cast<nn::models::UNet3D*>(&net)) return channel_groups(*unet);
  if (auto* resnet = dynamic_cast<nn::models::ResNet3D*>(&net)) return channel_groups(*resnet);
  fail("quant::channel_groups", "pruning supports MONAI's U-Net, the MLPerf U-Net and ResNet3D");
}

// Which channels each group keeps.
inline PrunePlan plan_pruning(const std::vector<ChannelGroup>& groups, const PruneOptions& o = {}) {
  VOX_CHECK(o.amount >= 0 && o.amount < 1, "quant::plan_pruning", "amount ", o.amount, " is outside [0, 1)");
  std::vector<std::vector<double>> score;
  for (const ChannelGroup& g : groups) score.push_back(prune_detail::filter_norms(g, o.norm));
  std::vector<std::vector<bool>> removed(groups.size());
  for (size_t i = 0; i < groups.size(); ++i) removed[i].assign(score[i].size(), false);
  if (!o.global) {
    for (size_t i = 0; i < groups.size(); ++i) {
      const int64_t n = static_cast<int64_t>(score[i].size()), drop = std::min<int64_t>(n - 1, std::llround(o.amount * double(n) - 0.5 + 1e-9));
      std::vector<int64_t> order(static_cast<size_t>(n));
      std::iota(order.begin(), order.end(), 0);
      std::stable_sort(order.begin(), order.end(), [&](int64_t a, int64_t b) { return score[i][static_cast<size_t>(a)] < score[i][static_cast<size_t>(b)]; });
      for (int64_t k = 0; k < drop; ++k) removed[i][static_cast<size_t>(order[static_cast<size_t>(k)])] = true;
    }
  } else {
    struct Entry {
      double score;
      size_t group;
      int64_t channel;
    };
    std::vector<Entry> all;
    for (size_t i = 0; i < groups.size(); ++i) {
      const double mean = std::accumulate(score[i].begin(), score[i].end(), 0.0) / double(std::max<size_t>(score[i].size(), 1));
      for (size_t ch = 0; ch < score[i].size(); ++ch) all.push_back({mean > 0 ? score[i][ch] / mean : 0.0, i, static_cast<int64_t>(ch)});
    }
    std::stable_sort(all.begin(), all.end(), [](const Entry& a, const Entry& b) { return a.score < b.score; });
    int64_t drop = static_cast<int64_t>(std::floor(o.amount * double(all.size()) + 1e-9));
    std::vector<int64_t> left(groups.size());
    for (size_t i = 0; i < groups.size(); ++i) left[i] = static_cast<int64_t>(score[i].size());
    for (const Entry& e : all) {
      if (drop == 0) break;
      if (left[e.group] <= 1) continue;  // every group keeps a channel
      removed[e.group][static_cast<size_t>(e.channel)] = true;
      --left[e.group], --drop;
    }
  }
  PrunePlan plan(groups.size());
  for (size_t i = 0; i < groups.size(); ++i)
    for (size_t ch = 0; ch < removed[i].size(); ++ch)
      if (!removed[i][ch]) plan[i].push_back(static_cast<int64_t>(ch));
  return plan;
}

// Removes the channels the plan drops: every member tensor loses them along its axis, every
// instance norm's channel count shrinks. Optimizers hold the old tensors: build them afterwards.
inline void apply_pruning(const std::vector<ChannelGroup>& groups, const PrunePlan& plan) {
  VOX_CHECK(plan.size() == groups.size(), "quant::apply_pruning", "the plan has ", plan.size(), " groups, the network ", groups.size());
  // per (tensor, axis): which of its original indices stay
  std::map<std::pair<Tensor*, int64_t>, std::vector<bool>> keep;
  for (size_t i = 0; i < groups.size(); ++i) {
    std::vector<bool> kept(static_cast<size_t>(groups[i].channels), false);
    for (int64_t ch : plan[i]) {
      VOX_CHECK(ch >= 0 && ch < groups[i].channels, "quant::apply_pruning", "group ", groups[i].name, " has no channel ", ch);
      kept[static_cast<size_t>(ch)] = true;
    }
    VOX_CHECK(!plan[i].empty(), "quant::apply_pruning", "group ", groups[i].name, " would lose every channel");
    for (const ChannelSlice& s : groups[i].members) {
      const int64_t axis = s.axis < 0 ? s.axis + s.tensor->rank() : s.axis;
      auto [it, fresh] = keep.try_emplace({s.tensor, axis}, std::vector<bool>(static_cast<size_t>(s.tensor->size(axis)), true));
      for (int64_t ch = 0; ch < groups[i].channels; ++ch) it->second[static_cast<size_t>(s.offset + ch)] = kept[static_cast<size_t>(ch)];
    }
  }
  NoGradGuard no_grad;
  for (const auto& [key, mask] : keep) {
    std::vector<int64_t> indices;
    for (size_t k = 0; k < mask.size(); ++k)
      if (mask[k]) indices.push_back(static_cast<int64_t>(k));
    Tensor* t = key.first;
    const bool trainable = t->requires_grad();
    *t = prune_detail::select(*t, key.second, indices);
    if (trainable) t->set_requires_grad(true);
  }
  for (size_t i = 0; i < groups.size(); ++i)
    for (nn::InstanceNorm<3>* norm : groups[i].norms) norm->set_channels(static_cast<int64_t>(plan[i].size()));
}

// Zeroes the channels the plan drops (their producing filters and biases) in place: the network
// then computes what the pruned one does. For tests and for masks (unstructured pruning's "no
// speed-up" counterpart).
inline void zero_pruned_channels(const std::vector<ChannelGroup>& groups, const PrunePlan& plan) {
  NoGradGuard no_grad;
  for (size_t i = 0; i < groups.size(); ++i) {
    std::vector<bool> kept(static_cast<size_t>(groups[i].channels), false);
    for (int64_t ch : plan[i]) kept[static_cast<size_t>(ch)] = true;
    for (const ChannelSlice& s : groups[i].members) {
      const bool producer = std::any_of(groups[i].producers.begin(), groups[i].producers.end(),
                                        [&](const ChannelSlice& p) { return p.tensor == s.tensor && p.axis == s.axis; });
      const bool bias = s.tensor->rank() == 1;
      if (!producer && !bias) continue;  // consumers keep their weights: they read zeros
      Tensor c = s.tensor->detach().to(DType::f32).contiguous();
      const int64_t axis = s.axis < 0 ? s.axis + c.rank() : s.axis;
      int64_t inner = 1;
      for (int64_t a = axis + 1; a < c.rank(); ++a) inner *= c.size(a);
      const int64_t size = c.size(axis), outer = c.numel() / (size * inner);
      float* v = c.data<float>();
      for (int64_t o = 0; o < outer; ++o)
        for (int64_t ch = 0; ch < groups[i].channels; ++ch)
          if (!kept[static_cast<size_t>(ch)])
            for (int64_t k = 0; k < inner; ++k) v[(o * size + s.offset + ch) * inner + k] = 0.0f;
      s.tensor->detach().copy_from(c.to(s.tensor->dtype()));
    }
  }
}

}  // namespace vox::quant
