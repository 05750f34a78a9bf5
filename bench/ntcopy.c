/* ntcopy: a 16 MB copy with glibc memcpy against a loop of SSE2 non-temporal (streamed) stores,
 * on one thread and split over two, and the receiver's two copies of a large unpack (sender's
 * arena -> receive buffer -> program's array) against one read streamed into both at once. Cold
 * buffers (a ring of 6). The question behind it (docs/bench-daemon.md, "Large copies on two
 * threads"): does glibc stream at these sizes here? It does not (its threshold scales with the
 * last-level cache); libpvm3-shim pcopy.rs streams.
 * Build: cc -O2 -pthread -o ntcopy bench/ntcopy.c; run: ntcopy. */
#include <emmintrin.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#define RING 6
static double now(void){struct timespec t;clock_gettime(CLOCK_MONOTONIC,&t);return t.tv_sec*1e6+t.tv_nsec/1e3;}
static void ntcopy(char *d, const char *s, size_t n){ /* d 16-aligned assumed */
  size_t i=0; for(;i+64<=n;i+=64){ __m128i a=_mm_loadu_si128((const __m128i*)(s+i)),b=_mm_loadu_si128((const __m128i*)(s+i+16)),c=_mm_loadu_si128((const __m128i*)(s+i+32)),e=_mm_loadu_si128((const __m128i*)(s+i+48));
   _mm_stream_si128((__m128i*)(d+i),a);_mm_stream_si128((__m128i*)(d+i+16),b);_mm_stream_si128((__m128i*)(d+i+32),c);_mm_stream_si128((__m128i*)(d+i+48),e);} memcpy(d+i,s+i,n-i); _mm_sfence();}
static void ntcopy2(char *d1, char *d2, const char *s, size_t n){
  size_t i=0; for(;i+64<=n;i+=64){ __m128i a=_mm_loadu_si128((const __m128i*)(s+i)),b=_mm_loadu_si128((const __m128i*)(s+i+16)),c=_mm_loadu_si128((const __m128i*)(s+i+32)),e=_mm_loadu_si128((const __m128i*)(s+i+48));
   _mm_stream_si128((__m128i*)(d1+i),a);_mm_stream_si128((__m128i*)(d1+i+16),b);_mm_stream_si128((__m128i*)(d1+i+32),c);_mm_stream_si128((__m128i*)(d1+i+48),e);
   _mm_stream_si128((__m128i*)(d2+i),a);_mm_stream_si128((__m128i*)(d2+i+16),b);_mm_stream_si128((__m128i*)(d2+i+32),c);_mm_stream_si128((__m128i*)(d2+i+48),e);} memcpy(d1+i,s+i,n-i);memcpy(d2+i,s+i,n-i); _mm_sfence();}
struct job{int mode; char *s,*d,*d2; size_t n;};
static void run(struct job *j){ if(j->mode==0){memcpy(j->d,j->s,j->n);} else if(j->mode==1){ntcopy(j->d,j->s,j->n);} else if(j->mode==2){memcpy(j->d,j->s,j->n);memcpy(j->d2,j->d,j->n);} else {ntcopy2(j->d,j->d2,j->s,j->n);} }
static void *th(void *a){run(a);return 0;}
int main(int c,char**v){ size_t N=16<<20; char *s[RING],*d[RING],*d2[RING]; for(int i=0;i<RING;i++){s[i]=aligned_alloc(64,N);d[i]=aligned_alloc(64,N);d2[i]=aligned_alloc(64,N);memset(s[i],i,N);memset(d[i],1,N);memset(d2[i],2,N);}
 const char *names[]={"memcpy","ntcopy","memcpy x2 (src->v->dst)","nt dual"};
 for(int mode=0;mode<4;mode++) for(int threads=1;threads<=2;threads++){ double best=1e9,sum=0; int it=20; double t[20];
  for(int k=0;k<it;k++){ int r=k%RING; struct job j1={mode,s[r],d[r],d2[r],N/threads}, j2={mode,s[r]+N/2,d[r]+N/2,d2[r]+N/2,N/2}; double t0=now(); pthread_t p; if(threads==2) pthread_create(&p,0,th,&j2); run(&j1); if(threads==2) pthread_join(p,0); t[k]=now()-t0; }
  for(int a=0;a<it;a++)for(int b=a+1;b<it;b++)if(t[b]<t[a]){double x=t[a];t[a]=t[b];t[b]=x;}
  printf("%-26s %d thr: min %.0f med %.0f us\n",names[mode],threads,t[0],t[it/2]); }
}
