// Kernel table of the CPU emulation harness. The build script generates, per
// kernels/*.cu module, a file that includes the shim, the unmodified source and
// one CUDA_EMU_KERNEL line per `extern "C" __global__` entry point it found.
#pragma once

#include <cstddef>
#include <cstring>
#include <type_traits>
#include <utility>

namespace cuda_emu {

struct Kernel {
    const char* name;
    std::size_t nparams;
    // Unpacks cuLaunchKernel-style args (one pointer per parameter, pointing
    // at its value) and runs the kernel body for the current thread.
    void (*invoke)(void** args);
};

struct Module {
    const char* name;
    const Kernel* kernels;
    std::size_t count;
};

template <auto F>
struct Invoker;

template <typename... A, void (*F)(A...)>
struct Invoker<F> {
    static constexpr std::size_t nparams = sizeof...(A);

    template <typename T>
    static T load(void* p) {
        using V = std::remove_cv_t<T>;
        static_assert(std::is_trivially_copyable_v<V>, "kernel parameters must be trivially copyable");
        V v;
        std::memcpy(static_cast<void*>(&v), p, sizeof(V));
        return v;
    }

    template <std::size_t... I>
    static void call(void** args, std::index_sequence<I...>) {
        F(load<A>(args[I])...);
    }

    static void invoke(void** args) { call(args, std::index_sequence_for<A...>{}); }
};

}  // namespace cuda_emu

#define CUDA_EMU_KERNEL(fn) \
    ::cuda_emu::Kernel { #fn, ::cuda_emu::Invoker<&fn>::nparams, &::cuda_emu::Invoker<&fn>::invoke }
