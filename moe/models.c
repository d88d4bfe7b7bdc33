/* Published MoE configurations for --model NAME: the routed layer of each model as its config.json on the Hugging
 * Face Hub (and the modelling code that reads it) defines it. What epbench's layer does not model is left out and
 * said so: attention, dense layers, Qwen2-MoE's sigmoid gate on the shared expert, Mixtral's and Llama 4's exact
 * operation order where it is the same math. Sizes are the published ones; --scale-down divides D, F and Fs. */
#include <stdio.h>
#include <string.h>

#include "moe.h"

const moe_model_t moe_models[] = {
    /* mistralai/Mixtral-8x7B-v0.1 config.json: hidden_size 4096, intermediate_size 14336, num_local_experts 8,
     * num_experts_per_tok 2. The HF MixtralSparseMoeBlock takes softmax over all 8 router logits, then the top 2,
     * then divides them by their sum: softmax with renormalisation. No shared expert, no groups. */
    { "mixtral-8x7b", "mistralai/Mixtral-8x7B-v0.1 config.json", 4096, 14336, 8, 2, MOE_SOFTMAX, true, 1.0, 1, 1,
      false, 0, 0 },
    /* Qwen/Qwen3-30B-A3B config.json: hidden_size 2048, moe_intermediate_size 768, num_experts 128,
     * num_experts_per_tok 8, norm_topk_prob true; softmax router (Qwen3MoeSparseMoeBlock); no shared expert. */
    { "qwen3-30b-a3b", "Qwen/Qwen3-30B-A3B config.json", 2048, 768, 128, 8, MOE_SOFTMAX, true, 1.0, 1, 1, false, 0,
      0 },
    /* meta-llama/Llama-4-Scout-17B-16E config.json (text_config): hidden_size 5120, intermediate_size 8192 (the
     * routed and the shared expert; intermediate_size_mlp 16384 is the dense layers'), num_local_experts 16,
     * num_experts_per_tok 1. Llama4TextMoe: sigmoid of the top-1 router logit, multiplied into the expert's input
     * (torchtitan: score_before_experts), plus one shared expert. */
    { "llama4-scout", "meta-llama/Llama-4-Scout-17B-16E config.json (text_config)", 5120, 8192, 16, 1, MOE_SIGMOID,
      false, 1.0, 1, 1, true, 1, 8192 },
    /* deepseek-ai/DeepSeek-V3 config.json: hidden_size 7168, moe_intermediate_size 2048, n_routed_experts 256,
     * num_experts_per_tok 8, n_group 8, topk_group 4, n_shared_experts 1 (of moe_intermediate_size),
     * routed_scaling_factor 2.5, scoring_func sigmoid, norm_topk_prob true, topk_method noaux_tc (the bias-corrected
     * selection with the aux-loss-free bias update). */
    { "deepseek-v3", "deepseek-ai/DeepSeek-V3 config.json", 7168, 2048, 256, 8, MOE_SIGMOID, true, 2.5, 8, 4, false,
      1, 2048 },
    /* deepseek-ai/DeepSeek-V2-Lite config.json: hidden_size 2048, moe_intermediate_size 1408, n_routed_experts 64,
     * num_experts_per_tok 6, n_shared_experts 2 (of moe_intermediate_size each), n_group 1, topk_group 1,
     * routed_scaling_factor 1.0, scoring_func softmax, norm_topk_prob false: several shared experts. */
    { "deepseek-v2-lite", "deepseek-ai/DeepSeek-V2-Lite config.json", 2048, 1408, 64, 6, MOE_SOFTMAX, false, 1.0, 1,
      1, false, 2, 1408 },
};
const int moe_nmodels = (int)(sizeof moe_models / sizeof *moe_models);

const moe_model_t *moe_model_find(const char *name)
{
    for (int i = 0; name && i < moe_nmodels; i++)
        if (!strcmp(moe_models[i].name, name)) return &moe_models[i];
    return NULL;
}

const char *moe_model_names(char *buf, size_t n)
{
    size_t u = 0;
    if (n) buf[0] = 0;
    for (int i = 0; i < moe_nmodels && u < n; i++)
        u += (size_t)snprintf(buf + u, n - u, "%s%s", i ? ", " : "", moe_models[i].name);
    return buf;
}
