#pragma once
// NIfTI-1 and NIfTI-2: .nii, .nii.gz and .hdr/.img(.gz) pairs, either byte order, every
// integer and floating datatype of the standard. Geometry follows nibabel exactly:
//   - the affine is the sform when sform_code > 0, else the qform when qform_code > 0, else
//     nibabel's fallback (pixdim scaling, x flipped, the volume's centre at the origin);
//   - scl_slope of 0 or NaN means no scaling (nibabel's rule); otherwise values become
//     slope * stored + inter, in f32 (f64 when the stored type is f64 or a 32/64-bit integer).
//     slope 1 with inter 0 changes nothing, and the stored type is kept.
// Unscaled voxels keep their type where vox has it: u8, i8, i32, i64, f32, f64; i16 and u16
// widen to i32, u32 to i64; u64 is read into i64 and refused if a value does not fit.
// Voxels come as [k, j, i] (3-D) or [k, j, i, t] (4-D, the 4th axis as channels); see image.hpp.
//
// Malformed input (truncated, bad magic, absurd sizes, sizes past the end of the data) raises a
// vox::Error that names the file and the field. The reader never allocates more than the file
// can hold: a .gz stream is decompressed only as far as the header says the data goes, and no
// further than the read ceiling (read_limits.hpp) allows.
#include <zlib.h>

#include <cstring>
#include <limits>
#include <string>
#include <type_traits>
#include <vector>

#include "vox/io/file.hpp"
#include "vox/io/image.hpp"
#include "vox/io/read_limits.hpp"

namespace vox::io {

struct NiftiInfo {
  int version = 1;            // 1 or 2
  bool big_endian = false;
  int datatype = 0;           // NIfTI datatype code as stored
  int qform_code = 0, sform_code = 0;
  double scl_slope = 0, scl_inter = 0;
  std::vector<int64_t> dims;  // dim[1..dim[0]] as stored
  std::string description;
};

struct NiftiImage {
  Image image;
  NiftiInfo info;
};

namespace nifti_detail {

inline bool has_suffix(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

inline bool is_gzip(const std::vector<char>& raw) {
  return raw.size() >= 2 && static_cast<unsigned char>(raw[0]) == 0x1f && static_cast<unsigned char>(raw[1]) == 0x8b;
}

// The first `limit` bytes of a gzip file's contents (fewer if the stream ends first).
inline std::vector<unsigned char> gunzip(const std::vector<char>& raw, size_t limit, const std::string& path) {
  struct Inflater {  // ends the stream on every path out, errors included
    z_stream zs{};
    ~Inflater() { inflateEnd(&zs); }
  } inflater;
  z_stream& zs = inflater.zs;
  VOX_CHECK(inflateInit2(&zs, 15 + 32) == Z_OK, "nifti", path, ": cannot start gzip decompression");
  std::vector<unsigned char> out;
  size_t fed = 0;
  while (out.size() < limit) {
    if (zs.avail_in == 0 && fed < raw.size()) {  // zlib takes at most 4 GiB of input at a time
      const size_t next = std::min<size_t>(raw.size() - fed, std::numeric_limits<uInt>::max());
      zs.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(raw.data() + fed));
      zs.avail_in = static_cast<uInt>(next);
      fed += next;
    }
    const size_t chunk = std::min<size_t>(limit - out.size(), size_t{1} << 24);
    const size_t before = out.size();
    out.resize(before + chunk);
    zs.next_out = out.data() + before;
    zs.avail_out = static_cast<uInt>(chunk);
    const int status = inflate(&zs, Z_NO_FLUSH);
    out.resize(before + chunk - zs.avail_out);
    if (status == Z_STREAM_END) {
      if (zs.avail_in == 0 && fed == raw.size()) break;
      // concatenated gzip members (as some writers produce): continue with the next one
      VOX_CHECK(inflateReset(&zs) == Z_OK, "nifti", path, ": corrupt gzip stream");
      continue;
    }
    if (status == Z_BUF_ERROR && zs.avail_in == 0 && fed == raw.size()) break;  // truncated: the caller sees the size
    VOX_CHECK(status == Z_OK, "nifti", path, ": corrupt gzip data (zlib: ", zs.msg ? zs.msg : "error ", status, ") after ",
              out.size(), " decompressed bytes");
  }
  return out;
}

// A gzip stream deflated into `out` a chunk at a time: zlib's counters are 32-bit, so input of
// any size is fed in pieces of at most `chunk` bytes, and output leaves through a buffer of that size.
class GzipWriter {
 public:
  GzipWriter(std::ofstream& out, size_t chunk, const std::string& path) : out_(out), chunk_(chunk), path_(path), buffer_(chunk) {
    // (a constructor that throws runs no destructor, so deflateEnd only ever ends a started stream)
    VOX_CHECK(deflateInit2(&zs_, 6, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY) == Z_OK, "write_nifti", path, ": cannot start gzip");
  }
  ~GzipWriter() { deflateEnd(&zs_); }
  GzipWriter(const GzipWriter&) = delete;
  GzipWriter& operator=(const GzipWriter&) = delete;

  void write(const unsigned char* data, size_t size) {
    while (size > 0) {
      const size_t piece = std::min(size, chunk_);
      zs_.next_in = const_cast<Bytef*>(data);
      zs_.avail_in = static_cast<uInt>(piece);
      drain(Z_NO_FLUSH);
      data += piece, size -= piece;
    }
  }
  void finish() { drain(Z_FINISH); }

 private:
  // Deflates what zlib holds, writing every full buffer, until the input is used (or the stream ends).
  void drain(int flush) {
    while (true) {
      zs_.next_out = buffer_.data();
      zs_.avail_out = static_cast<uInt>(buffer_.size());
      const int status = deflate(&zs_, flush);
      VOX_CHECK(status == Z_OK || status == Z_STREAM_END || status == Z_BUF_ERROR, "write_nifti", path_, ": gzip compression failed (zlib ",
                status, ")");
      out_.write(reinterpret_cast<const char*>(buffer_.data()), static_cast<std::streamsize>(buffer_.size() - zs_.avail_out));
      VOX_CHECK(out_.good(), "write_nifti", path_, ": writing the compressed data failed (disk full?)");
      if (flush == Z_FINISH ? status == Z_STREAM_END : (zs_.avail_in == 0 && zs_.avail_out != 0)) return;
    }
  }

  std::ofstream& out_;
  size_t chunk_;
  const std::string& path_;
  std::vector<unsigned char> buffer_;
  z_stream zs_{};
};

// Reads little- or big-endian fields of a header buffer, with bounds checks.
class Fields {
 public:
  Fields(const std::vector<unsigned char>& bytes, bool swap, const std::string& path) : b_(bytes), swap_(swap), path_(path) {}
  template <class T>
  T get(size_t offset, const char* field) const {
    VOX_CHECK(offset + sizeof(T) <= b_.size(), "nifti", path_, ": header ends before field ", field);
    unsigned char tmp[sizeof(T)];
    std::memcpy(tmp, b_.data() + offset, sizeof(T));
    if (swap_) std::reverse(tmp, tmp + sizeof(T));
    T v;
    std::memcpy(&v, tmp, sizeof(T));
    return v;
  }

 private:
  const std::vector<unsigned char>& b_;
  bool swap_;
  const std::string& path_;
};

// Storage size in bytes of a NIfTI datatype code, or 0 if vox cannot read it.
inline int datatype_size(int code) {
  switch (code) {
    case 2: case 256: return 1;                 // u8, i8
    case 4: case 512: return 2;                 // i16, u16
    case 8: case 768: case 16: return 4;        // i32, u32, f32
    case 64: case 1024: case 1280: return 8;    // f64, i64, u64
  }
  return 0;
}

inline const char* datatype_name(int code) {
  switch (code) {
    case 1: return "binary";
    case 32: return "complex64";
    case 128: return "RGB24";
    case 1536: return "float128";
    case 1792: return "complex128";
    case 2048: return "complex256";
    case 2304: return "RGBA32";
  }
  return "unknown";
}

// nibabel's qform: quaternion (b, c, d), a = sqrt(1 - b^2 - c^2 - d^2), qfac from pixdim[0].
inline Affine qform_affine(double b, double c, double d, double qfac, const double pixdim[3], const double offset[3]) {
  double a = 1.0 - (b * b + c * c + d * d);
  if (a < 1e-7) {  // nibabel: a is taken as 0 and (b, c, d) renormalised
    const double n = std::sqrt(b * b + c * c + d * d);
    b /= n, c /= n, d /= n;
    a = 0;
  } else {
    a = std::sqrt(a);
  }
  const double R[3][3] = {{a * a + b * b - c * c - d * d, 2 * (b * c - a * d), 2 * (b * d + a * c)},
                          {2 * (b * c + a * d), a * a + c * c - b * b - d * d, 2 * (c * d - a * b)},
                          {2 * (b * d - a * c), 2 * (c * d + a * b), a * a + d * d - c * c - b * b}};
  Affine m{};
  for (int r = 0; r < 3; ++r) {
    for (int col = 0; col < 3; ++col) m[r][col] = R[r][col] * pixdim[col] * (col == 2 ? qfac : 1.0);
    m[r][3] = offset[r];
  }
  m[3] = {0, 0, 0, 1};
  return m;
}

}  // namespace nifti_detail

inline NiftiImage read_nifti(const std::string& path, const ReadLimits& limits = {}) {
  using namespace nifti_detail;
  std::string header_path = path, data_path = path;
  bool pair = false;
  for (const char* ext : {".hdr", ".hdr.gz"})
    if (has_suffix(path, ext)) {
      pair = true;
      data_path = path.substr(0, path.size() - std::strlen(ext)) + (has_suffix(path, ".gz") ? ".img.gz" : ".img");
    }
  for (const char* ext : {".img", ".img.gz"})
    if (has_suffix(path, ext)) {
      pair = true;
      header_path = path.substr(0, path.size() - std::strlen(ext)) + (has_suffix(path, ".gz") ? ".hdr.gz" : ".hdr");
    }
  // Each file is read once: a single-file image's voxels come from the bytes its header came from.
  const std::vector<char> header_file = read_file(header_path);
  const std::vector<unsigned char> head =
      is_gzip(header_file) ? gunzip(header_file, 544, header_path)
                           : std::vector<unsigned char>(header_file.begin(), header_file.begin() + static_cast<std::ptrdiff_t>(std::min<size_t>(544, header_file.size())));
  VOX_CHECK(head.size() >= 348, "nifti", header_path, ": ", head.size(), " bytes is too short for a NIfTI header (348 or 540)");

  NiftiInfo info;
  int32_t sizeof_hdr;
  std::memcpy(&sizeof_hdr, head.data(), 4);
  bool swap = false;
  if (sizeof_hdr != 348 && sizeof_hdr != 540) {
    std::reverse(reinterpret_cast<unsigned char*>(&sizeof_hdr), reinterpret_cast<unsigned char*>(&sizeof_hdr) + 4);
    swap = true;
  }
  VOX_CHECK(sizeof_hdr == 348 || sizeof_hdr == 540, "nifti", header_path, ": sizeof_hdr is neither 348 (NIfTI-1) nor 540 (NIfTI-2) in either byte order");
  info.version = sizeof_hdr == 348 ? 1 : 2;
  info.big_endian = swap == (std::endian::native == std::endian::little);
  VOX_CHECK(info.version == 1 || head.size() >= 540, "nifti", header_path, ": truncated NIfTI-2 header (", head.size(), " bytes)");
  const Fields f(head, swap, header_path);
  const bool v1 = info.version == 1;

  // magic: "n+1"/"ni1" (NIfTI-1, single file / pair), "n+2"/"ni2" (NIfTI-2)
  const size_t magic_at = v1 ? 344 : 4;
  const std::string magic(reinterpret_cast<const char*>(head.data() + magic_at), 3);
  const std::string single = v1 ? "n+1" : "n+2", paired = v1 ? "ni1" : "ni2";
  VOX_CHECK(magic == single || magic == paired, "nifti", header_path, ": magic \"", magic, "\" is not ", single, " or ", paired,
            v1 ? " (Analyze 7.5 files are not read)" : "");
  VOX_CHECK(!pair || magic == paired, "nifti", header_path, ": a .hdr/.img pair needs the magic ", paired, ", found ", magic);
  VOX_CHECK(pair || magic == single, "nifti", header_path, ": magic ", magic, " says the voxels are in a separate .img file");

  int64_t dim[8];
  double pixdim[8];
  for (int i = 0; i < 8; ++i) {
    dim[i] = v1 ? f.get<int16_t>(40 + 2 * i, "dim") : f.get<int64_t>(16 + 8 * i, "dim");
    pixdim[i] = v1 ? f.get<float>(76 + 4 * i, "pixdim") : f.get<double>(104 + 8 * i, "pixdim");
  }
  info.datatype = v1 ? f.get<int16_t>(70, "datatype") : f.get<int16_t>(12, "datatype");
  const double vox_offset = v1 ? f.get<float>(108, "vox_offset") : static_cast<double>(f.get<int64_t>(168, "vox_offset"));
  info.scl_slope = v1 ? f.get<float>(112, "scl_slope") : f.get<double>(176, "scl_slope");
  info.scl_inter = v1 ? f.get<float>(116, "scl_inter") : f.get<double>(184, "scl_inter");
  info.qform_code = v1 ? f.get<int16_t>(252, "qform_code") : f.get<int32_t>(344, "qform_code");
  info.sform_code = v1 ? f.get<int16_t>(254, "sform_code") : f.get<int32_t>(348, "sform_code");
  const size_t descrip_at = v1 ? 148 : 240;
  info.description.assign(reinterpret_cast<const char*>(head.data() + descrip_at), 80);
  info.description.resize(std::strlen(info.description.c_str()));

  VOX_CHECK(dim[0] >= 1 && dim[0] <= 7, "nifti", header_path, ": dim[0] = ", dim[0], " is not a rank between 1 and 7");
  int64_t count = 1;
  for (int i = 1; i <= dim[0]; ++i) {
    VOX_CHECK(dim[i] >= 1, "nifti", header_path, ": dim[", i, "] = ", dim[i], " is not a positive size");
    VOX_CHECK(count <= (int64_t{1} << 40) / dim[i], "nifti", header_path, ": ", dim[0], "-D size is absurd (more than 2^40 voxels)");
    count *= dim[i];
    info.dims.push_back(dim[i]);
  }
  for (int i = 5; i <= dim[0]; ++i)
    VOX_CHECK(dim[i] == 1, "nifti", header_path, ": dim[", i, "] = ", dim[i], "; images of more than 4 dimensions are not supported");
  const int bytes_per_voxel = datatype_size(info.datatype);
  VOX_CHECK(bytes_per_voxel > 0, "nifti", header_path, ": datatype ", info.datatype, " (", datatype_name(info.datatype),
            ") is not supported; vox reads u8 i8 i16 u16 i32 u32 i64 u64 f32 f64");
  VOX_CHECK(std::isfinite(vox_offset) && vox_offset >= 0 && vox_offset < double(int64_t{1} << 40), "nifti", header_path,
            ": vox_offset ", vox_offset, " is not a valid offset");
  const size_t offset = pair ? static_cast<size_t>(vox_offset) : std::max<size_t>(static_cast<size_t>(vox_offset), static_cast<size_t>(sizeof_hdr));
  const size_t nbytes = static_cast<size_t>(count) * static_cast<size_t>(bytes_per_voxel);
  check_read_claim(nbytes, limits, "nifti", header_path, "the header (" + std::to_string(count) + " voxels of datatype " +
                                                             std::to_string(info.datatype) + ")");

  const std::vector<char> data_file = pair ? read_file(data_path) : std::vector<char>();
  const std::vector<char>& data_raw = pair ? data_file : header_file;
  std::vector<unsigned char> inflated;
  const unsigned char* data_bytes = reinterpret_cast<const unsigned char*>(data_raw.data());
  size_t data_size = std::min(data_raw.size(), offset + nbytes);
  if (is_gzip(data_raw)) {
    inflated = gunzip(data_raw, offset + nbytes, data_path);
    data_bytes = inflated.data();
    data_size = inflated.size();
  }
  VOX_CHECK(data_size == offset + nbytes, "nifti", data_path, ": the header declares ", nbytes, " bytes of voxels at offset ",
            offset, " (vox_offset) but the ", has_suffix(data_path, ".gz") ? "decompressed " : "", "file holds ", data_size, " bytes");

  // ---- voxels: [k, j, i] or [k, j, i, t]
  const int64_t ni = dim[0] >= 1 ? dim[1] : 1, nj = dim[0] >= 2 ? dim[2] : 1, nk = dim[0] >= 3 ? dim[3] : 1,
                nt = dim[0] >= 4 ? dim[4] : 1;
  const bool slope_valid = std::isfinite(info.scl_slope) && info.scl_slope != 0.0;
  const double slope = slope_valid ? info.scl_slope : 1.0;
  const double inter = slope_valid && std::isfinite(info.scl_inter) ? info.scl_inter : 0.0;
  const bool scaled = slope != 1.0 || inter != 0.0;
  const bool wide = info.datatype == 64 || info.datatype == 8 || info.datatype == 768 || info.datatype == 1024 || info.datatype == 1280;
  DType out_dtype;
  if (scaled) out_dtype = wide ? DType::f64 : DType::f32;
  else
    switch (info.datatype) {
      case 2: out_dtype = DType::u8; break;
      case 256: out_dtype = DType::i8; break;
      case 4: case 512: case 8: out_dtype = DType::i32; break;
      case 768: case 1024: case 1280: out_dtype = DType::i64; break;
      case 16: out_dtype = DType::f32; break;
      default: out_dtype = DType::f64; break;
    }
  Tensor flat = empty({count}, out_dtype);
  const unsigned char* src = data_bytes + offset;
  auto fill = [&]<class S, class D>(D* dst) {
    if constexpr (std::is_same_v<S, D>) {
      if (!swap && !scaled) {  // stored as vox keeps it: one copy (a 4 GiB volume in a second, not a minute)
        std::memcpy(dst, src, static_cast<size_t>(count) * sizeof(S));
        return;
      }
    }
    for (int64_t n = 0; n < count; ++n) {
      unsigned char tmp[sizeof(S)];
      std::memcpy(tmp, src + n * sizeof(S), sizeof(S));
      if (swap) std::reverse(tmp, tmp + sizeof(S));
      S v;
      std::memcpy(&v, tmp, sizeof(S));
      if constexpr (std::is_same_v<S, uint64_t>)
        VOX_CHECK(scaled || v <= static_cast<uint64_t>(std::numeric_limits<int64_t>::max()), "nifti", data_path,
                  ": u64 voxel ", v, " does not fit vox's i64");
      if (scaled) dst[n] = static_cast<D>(slope * static_cast<double>(v) + inter);
      else dst[n] = static_cast<D>(v);
    }
  };
  dispatch_all(out_dtype, "nifti", [&]<class D>() {
    if constexpr (std::is_same_v<D, half> || std::is_same_v<D, bfloat16> || std::is_same_v<D, bool>) {
      fail("nifti", "unreachable dtype");
    } else {
      D* dst = flat.data<D>();
      switch (info.datatype) {
        case 2: fill.template operator()<uint8_t>(dst); break;
        case 256: fill.template operator()<int8_t>(dst); break;
        case 4: fill.template operator()<int16_t>(dst); break;
        case 512: fill.template operator()<uint16_t>(dst); break;
        case 8: fill.template operator()<int32_t>(dst); break;
        case 768: fill.template operator()<uint32_t>(dst); break;
        case 1024: fill.template operator()<int64_t>(dst); break;
        case 1280: fill.template operator()<uint64_t>(dst); break;
        case 16: fill.template operator()<float>(dst); break;
        case 64: fill.template operator()<double>(dst); break;
      }
    }
  });
  NiftiImage out;
  out.info = info;
  Image& image = out.image;
  if (nt == 1) image.voxels = flat.reshape({nk, nj, ni});
  else image.voxels = flat.reshape({nt, nk, nj, ni}).permute({1, 2, 3, 0}).contiguous();  // time as channels, last

  // ---- geometry, with nibabel's precedence
  Affine affine{};
  if (info.sform_code > 0) {
    for (int r = 0; r < 3; ++r)
      for (int c = 0; c < 4; ++c)
        affine[r][c] = v1 ? f.get<float>(280 + 16 * r + 4 * c, "srow") : f.get<double>(400 + 32 * r + 8 * c, "srow");
    affine[3] = {0, 0, 0, 1};
  } else if (info.qform_code > 0) {
    const double b = v1 ? f.get<float>(256, "quatern_b") : f.get<double>(352, "quatern_b");
    const double c = v1 ? f.get<float>(260, "quatern_c") : f.get<double>(360, "quatern_c");
    const double d = v1 ? f.get<float>(264, "quatern_d") : f.get<double>(368, "quatern_d");
    double off[3];
    for (int i = 0; i < 3; ++i) off[i] = v1 ? f.get<float>(268 + 4 * i, "qoffset") : f.get<double>(376 + 8 * i, "qoffset");
    const double qfac = pixdim[0] < 0 ? -1.0 : 1.0;
    const double zooms[3] = {pixdim[1], pixdim[2], pixdim[3]};
    affine = qform_affine(b, c, d, qfac, zooms, off);
  } else {  // nibabel's fallback: scaled by pixdim, x flipped, centred
    const int64_t shape[3] = {ni, nj, nk};
    for (int r = 0; r < 3; ++r) {
      const double zoom = (r + 1 <= dim[0] && pixdim[r + 1] != 0) ? std::abs(pixdim[r + 1]) : 1.0;
      const double s = r == 0 ? -zoom : zoom;
      affine[r][r] = s;
      affine[r][3] = -s * (static_cast<double>(shape[r]) - 1) / 2.0;
    }
    affine[3] = {0, 0, 0, 1};
  }
  for (int r = 0; r < 3; ++r)
    for (int c = 0; c < 4; ++c) VOX_CHECK(std::isfinite(affine[r][c]), "nifti", header_path, ": the affine has a non-finite entry");
  image.set_affine(affine, Convention::ras);
  return out;
}

inline Image read_nifti_image(const std::string& path) { return read_nifti(path).image; }

// Writes `image` as NIfTI-1 (or NIfTI-2 with version = 2), .nii or, when the name ends in .gz,
// .nii.gz. Both sform and qform hold the geometry (codes 1, scanner). f16/bf16 are written as
// f32 and bool as u8; integer and floating dtypes keep their type. A .gz is deflated in chunks
// straight into the file, so volumes of any size (past zlib's 32-bit counters) are written whole,
// or an error is thrown and no file is left.
struct NiftiWriteOptions {
  int version = 1;                        // NIfTI-1 or NIfTI-2
  size_t chunk_bytes = size_t{1} << 24;  // a .gz is deflated this many bytes at a time
};

inline void write_nifti(const std::string& path, const Image& image, const NiftiWriteOptions& options) {
  using namespace nifti_detail;
  const int version = options.version;
  VOX_CHECK(version == 1 || version == 2, "write_nifti", "version must be 1 or 2, got ", version);
  VOX_CHECK(options.chunk_bytes > 0 && options.chunk_bytes <= (size_t{1} << 30), "write_nifti", "chunk_bytes ", options.chunk_bytes,
            " is not between 1 and 2^30");
  const Tensor& v = image.voxels;
  VOX_CHECK(v.rank() == 3 || v.rank() == 4, "write_nifti", path, ": voxels must be [k, j, i] or [k, j, i, t], got ", v.shape());
  DType dtype = v.dtype();
  int code;
  switch (dtype) {
    case DType::u8: code = 2; break;
    case DType::i8: code = 256; break;
    case DType::i32: code = 8; break;
    case DType::i64: code = 1024; break;
    case DType::f64: code = 64; break;
    case DType::boolean: dtype = DType::u8, code = 2; break;
    default: dtype = DType::f32, code = 16; break;
  }
  const int64_t nk = v.size(0), nj = v.size(1), ni = v.size(2), nt = v.rank() == 4 ? v.size(3) : 1;
  // i fastest: [t, k, j, i] in memory
  const Tensor data = (v.rank() == 4 ? v.permute({3, 0, 1, 2}) : v).to(Device::cpu()).to(dtype).contiguous();
  const bool v1 = version == 1;
  const size_t header_size = v1 ? 348 : 540, offset = v1 ? 352 : 544;
  std::vector<unsigned char> h(offset, 0);
  auto put = [&]<class T>(size_t at, T value) { std::memcpy(h.data() + at, &value, sizeof(T)); };
  put(0, static_cast<int32_t>(header_size));
  const Affine a = image.affine(Convention::ras);
  const int64_t dims[8] = {nt > 1 ? 4 : 3, ni, nj, nk, nt, 1, 1, 1};
  const double spacing[3] = {image.spacing[0], image.spacing[1], image.spacing[2]};
  // qform: the rotation (with qfac for a left-handed frame) as a unit quaternion
  double R[3][3];
  for (int r = 0; r < 3; ++r)
    for (int c = 0; c < 3; ++c) R[r][c] = a[r][c] / spacing[c];
  double det = R[0][0] * (R[1][1] * R[2][2] - R[1][2] * R[2][1]) - R[0][1] * (R[1][0] * R[2][2] - R[1][2] * R[2][0]) +
               R[0][2] * (R[1][0] * R[2][1] - R[1][1] * R[2][0]);
  const double qfac = det < 0 ? -1.0 : 1.0;
  for (int r = 0; r < 3; ++r) R[r][2] *= qfac;
  double qa = 0.5 * std::sqrt(std::max(0.0, 1 + R[0][0] + R[1][1] + R[2][2])), qb, qc, qd;
  if (qa > 1e-3) {
    qb = 0.25 * (R[2][1] - R[1][2]) / qa, qc = 0.25 * (R[0][2] - R[2][0]) / qa, qd = 0.25 * (R[1][0] - R[0][1]) / qa;
  } else if (R[0][0] >= R[1][1] && R[0][0] >= R[2][2]) {
    qb = 0.5 * std::sqrt(std::max(0.0, 1 + R[0][0] - R[1][1] - R[2][2]));
    qc = 0.25 * (R[0][1] + R[1][0]) / qb, qd = 0.25 * (R[0][2] + R[2][0]) / qb, qa = 0.25 * (R[2][1] - R[1][2]) / qb;
  } else if (R[1][1] >= R[2][2]) {
    qc = 0.5 * std::sqrt(std::max(0.0, 1 - R[0][0] + R[1][1] - R[2][2]));
    qb = 0.25 * (R[0][1] + R[1][0]) / qc, qd = 0.25 * (R[1][2] + R[2][1]) / qc, qa = 0.25 * (R[0][2] - R[2][0]) / qc;
  } else {
    qd = 0.5 * std::sqrt(std::max(0.0, 1 - R[0][0] - R[1][1] + R[2][2]));
    qb = 0.25 * (R[0][2] + R[2][0]) / qd, qc = 0.25 * (R[1][2] + R[2][1]) / qd, qa = 0.25 * (R[1][0] - R[0][1]) / qd;
  }
  if (qa < 0) qb = -qb, qc = -qc, qd = -qd;  // the stored quaternion has a >= 0
  const double pixdim[8] = {qfac, spacing[0], spacing[1], spacing[2], 1, 1, 1, 1};
  if (v1) {
    for (int i = 0; i < 8; ++i) {
      VOX_CHECK(dims[i] <= 32767, "write_nifti", path, ": size ", dims[i], " does not fit NIfTI-1; write version 2");
      put(40 + 2 * i, static_cast<int16_t>(dims[i]));
      put(76 + 4 * i, static_cast<float>(pixdim[i]));
    }
    put(70, static_cast<int16_t>(code));
    put(72, static_cast<int16_t>(dtype_size(dtype) * 8));
    put(108, static_cast<float>(offset));
    put(112, 0.0f), put(116, 0.0f);
    put(123, static_cast<uint8_t>(10 | 8));  // xyzt_units: mm and seconds
    put(252, int16_t{1}), put(254, int16_t{1});
    put(256, static_cast<float>(qb)), put(260, static_cast<float>(qc)), put(264, static_cast<float>(qd));
    for (int r = 0; r < 3; ++r) {
      put(268 + 4 * r, static_cast<float>(a[r][3]));
      for (int c = 0; c < 4; ++c) put(280 + 16 * r + 4 * c, static_cast<float>(a[r][c]));
    }
    std::memcpy(h.data() + 344, "n+1\0", 4);
  } else {
    std::memcpy(h.data() + 4, "n+2\0\r\n\032\n", 8);
    put(12, static_cast<int16_t>(code));
    put(14, static_cast<int16_t>(dtype_size(dtype) * 8));
    for (int i = 0; i < 8; ++i) {
      put(16 + 8 * i, dims[i]);
      put(104 + 8 * i, pixdim[i]);
    }
    put(168, static_cast<int64_t>(offset));
    put(344, int32_t{1}), put(348, int32_t{1});
    put(352, qb), put(360, qc), put(368, qd);
    for (int r = 0; r < 3; ++r) {
      put(376 + 8 * r, a[r][3]);
      for (int c = 0; c < 4; ++c) put(400 + 32 * r + 8 * c, a[r][c]);
    }
    put(500, int32_t{10 | 8});
  }
  const char* descrip = "vox";
  std::memcpy(h.data() + (v1 ? 148 : 240), descrip, std::strlen(descrip));
  const auto* voxels = static_cast<const unsigned char*>(data.raw_data());
  const size_t voxel_bytes = static_cast<size_t>(data.numel()) * dtype_size(dtype);
  write_file_atomically(path, [&](std::ofstream& out) {
    if (has_suffix(path, ".gz")) {
      GzipWriter gz(out, options.chunk_bytes, path);
      gz.write(h.data(), h.size());
      gz.write(voxels, voxel_bytes);
      gz.finish();
    } else {
      out.write(reinterpret_cast<const char*>(h.data()), static_cast<std::streamsize>(h.size()));
      out.write(reinterpret_cast<const char*>(voxels), static_cast<std::streamsize>(voxel_bytes));
    }
  });
}

inline void write_nifti(const std::string& path, const Image& image, int version = 1) {
  write_nifti(path, image, NiftiWriteOptions{.version = version});
}

}  // namespace vox::io
