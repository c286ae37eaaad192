"""benchmarks.train_memory.hlo_flops on optimised GPU HLO text in XLA's printed form (the lines as
XLA 0.10.2's GPU compiler prints them, shortened): a loop body runs its trip count, fusions and
library calls (cuBLAS, cuDNN convolutions of each kind) count, and element-wise work does not."""

from benchmarks.train_memory import hlo_flops

HLO = """HloModule jit_step, is_scheduled=true

%gemm_fusion_dot_computation (parameter_0: bf16[256,64], parameter_1: bf16[64,512]) -> bf16[256,512] {
  %parameter_0 = bf16[256,64]{1,0} parameter(0), metadata={scheduling_name="parameter_0"}
  %parameter_1 = bf16[64,512]{1,0} parameter(1), metadata={scheduling_name="parameter_1"}
  ROOT %dot.1 = bf16[256,512]{1,0} dot(%parameter_0, %parameter_1), lhs_contracting_dims={1}, rhs_contracting_dims={0}, metadata={op_name="jit(f)/while/body/dot_general"}
}

%fused_add (param_0: bf16[256,512]) -> bf16[256,512] {
  %param_0 = bf16[256,512]{1,0} parameter(0)
  ROOT %add.1 = bf16[256,512]{1,0} add(%param_0, %param_0)
}

%region_0.8 (arg_tuple.1: (s32[], bf16[256,64], /*index=2*/bf16[64,512])) -> (s32[], bf16[256,64], /*index=2*/bf16[64,512]) {
  %arg_tuple.1 = (s32[], bf16[256,64]{1,0}, /*index=2*/bf16[64,512]{1,0}) parameter(0), metadata={scheduling_name="arg_tuple.1"}
  %get-tuple-element.1 = bf16[256,64]{1,0} get-tuple-element(%arg_tuple.1), index=1
  %get-tuple-element.2 = bf16[64,512]{1,0} get-tuple-element(%arg_tuple.1), index=2
  %gemm_fusion_dot = bf16[256,512]{1,0} fusion(%get-tuple-element.1, %get-tuple-element.2), kind=kCustom, calls=%gemm_fusion_dot_computation, backend_config={"fusion_backend_config":{"kind":"__triton_nested_gemm_fusion"}}
  %loop_add_fusion = bf16[256,512]{1,0} fusion(%gemm_fusion_dot), kind=kLoop, calls=%fused_add
  ROOT %tuple.6 = (s32[], bf16[256,64]{1,0}, /*index=2*/bf16[64,512]{1,0}) tuple(%get-tuple-element.0, %get-tuple-element.1, %get-tuple-element.2)
}

%region_3.9 (arg_tuple.3: (s32[], bf16[256,64], /*index=2*/bf16[64,512])) -> pred[] {
  %arg_tuple.3 = (s32[], bf16[256,64]{1,0}, /*index=2*/bf16[64,512]{1,0}) parameter(0)
  ROOT %constant.1 = pred[] constant(false)
}

ENTRY %main.18 (x.1: bf16[2,64,64,128], w.1: bf16[96,3,3,128], a.1: bf16[16,2560,4], b.1: bf16[16,4,300], t.1: (s32[], bf16[256,64], /*index=2*/bf16[64,512])) -> bf16[2,64,64,96] {
  %x.1 = bf16[2,64,64,128]{3,2,1,0} parameter(0)
  %w.1 = bf16[96,3,3,128]{3,2,1,0} parameter(1)
  %a.1 = bf16[16,2560,4]{2,1,0} parameter(2)
  %b.1 = bf16[16,4,300]{2,1,0} parameter(3)
  %t.1 = (s32[], bf16[256,64]{1,0}, /*index=2*/bf16[64,512]{1,0}) parameter(4)
  %while.12 = (s32[], bf16[256,64]{1,0}, /*index=2*/bf16[64,512]{1,0}) while(%t.1), condition=%region_3.9, body=%region_0.8, metadata={op_name="jit(f)/while"}, backend_config={"known_trip_count":{"n":"7"},"known_init_step":{"init":"0","step":"1"}}
  %cudnn-conv.1 = (bf16[2,64,64,96]{3,2,1,0}, u8[0]{0}) custom-call(%x.1, %w.1), window={size=3x3 pad=1_1x1_1}, dim_labels=b01f_o01i->b01f, custom_call_target="__cudnn$convForward", backend_config={"cudnn_conv_backend_config":{"activation_mode":"kNone"}}
  %get-tuple-element.11 = bf16[2,64,64,96]{3,2,1,0} get-tuple-element(%cudnn-conv.1), index=0
  %cudnn-conv-bw-input.1 = (bf16[2,64,64,128]{3,2,1,0}, u8[0]{0}) custom-call(%get-tuple-element.11, %w.1), window={size=3x3 pad=1_1x1_1}, dim_labels=b01f_o01i->b01f, custom_call_target="__cudnn$convBackwardInput"
  %cudnn-conv-bw-filter.1 = (bf16[96,3,3,128]{3,2,1,0}, u8[0]{0}) custom-call(%x.1, %get-tuple-element.11), window={size=3x3 pad=1_1x1_1}, dim_labels=b01f_o01i->b01f, custom_call_target="__cudnn$convBackwardFilter"
  %custom-call.2236 = (f32[16,2560,300]{2,1,0}, s8[4194304]{0}) custom-call(%a.1, %b.1), custom_call_target="__cublas$lt$matmul", backend_config={"gemm_backend_config":{"dot_dimension_numbers":{"lhs_contracting_dimensions":["2"],"rhs_contracting_dimensions":["1"],"lhs_batch_dimensions":["0"],"rhs_batch_dimensions":["0"]}}}
  ROOT %get-tuple-element.12 = bf16[2,64,64,96]{3,2,1,0} get-tuple-element(%cudnn-conv.1), index=0
}
"""


def test_hlo_flops_counts_loops_fusions_and_library_calls():
    loop = 7 * 2 * 256 * 512 * 64  # the fused dot, once per iteration
    convolutions = 3 * 2 * (2 * 64 * 64 * 96) * (3 * 3 * 128)  # forward, input and filter gradients
    gemm = 2 * 16 * 2560 * 300 * 4
    assert hlo_flops(HLO) == loop + convolutions + gemm
